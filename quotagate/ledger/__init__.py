"""The tamper-evident ledger: per-organization hash chains, signed checkpoints, independent verification."""
