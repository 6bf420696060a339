"""Benchmarks: Quotagate against plain Envoy and LiteLLM (`make bench` runs `python -m bench.run`)."""
