"""Governance: IP allowlists, signed actor identity, prompt logging with redaction, alerts."""
