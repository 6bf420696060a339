"""Who is calling: gateway-key credentials, their hashes, and the key -> client -> project -> org chain."""
