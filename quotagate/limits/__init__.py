"""Limits: requests/min, tokens/min, monthly spend and prepaid credits, reserved before dispatch and settled after."""
