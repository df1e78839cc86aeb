"""The HTTP side: the app factory, ingest, health and metrics, the admin API."""
