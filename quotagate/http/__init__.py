"""The admin and portal HTTP API (FastAPI) over the same core and store as the gateway."""
