"""Touchpoint: the gateway core (config, events, bus, agents, web app, CLI)."""
