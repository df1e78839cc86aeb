"""Touchpoint: the gateway core (config, events, bus, agents, web app, CLI)."""

from gateway.compiled import use_source_if_stale

use_source_if_stale()
