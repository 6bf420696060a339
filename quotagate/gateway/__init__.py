"""The gateway's decisions, transport-free: Check (admit or deny) and metering (usage -> cost -> settle -> record)."""
