"""Model ids as clients write them: ``gpt-5.4`` or provider-prefixed ``openai/gpt-5.4``."""

from __future__ import annotations

from quotagate.apis import Provider

_PROVIDERS = {p.value: p for p in Provider}


def split_model(model: str) -> tuple[Provider | None, str]:
    """(provider, bare model) for ``openai/gpt-4.1``; (None, model) when there is no known provider prefix."""
    prefix, sep, rest = model.partition("/")
    if sep and prefix in _PROVIDERS and rest:
        return _PROVIDERS[prefix], rest
    return None, model
