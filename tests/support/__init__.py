"""Shared test helpers: real servers (PostgreSQL, Redis, Envoy), free ports, CLI runner."""
