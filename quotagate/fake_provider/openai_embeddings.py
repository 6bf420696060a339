"""POST /v1/embeddings: deterministic unit vectors, as floats or base64 float32."""

from __future__ import annotations

import base64
import math
import struct
import zlib
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import orjson

from quotagate.fake_provider.exchange import Exchange

_DEFAULT_DIMENSIONS = {"text-embedding-3-large": 3072}
MAX_DIMENSIONS = 4096


@lru_cache(maxsize=16)
def _base(dimensions: int) -> tuple[list[float], bytes]:
    """A unit vector, twice over so any rotation is one slice, plus the same as little-endian float32."""
    raw = [math.sin(i * 12.9898 + 1.0) for i in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    # Rounded like the API's float32 values (~8 significant digits) so JSON stays compact.
    unit = [float(f"{x / norm:.8g}") for x in raw]
    doubled = unit + unit
    return doubled, struct.pack(f"<{len(doubled)}f", *doubled)


def dimensions(model: str, body: Mapping[str, Any]) -> int:
    value = body.get("dimensions")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return _DEFAULT_DIMENSIONS.get(model, 1536)


def inputs(body: Mapping[str, Any]) -> list[str]:
    """One key per embedding: a text, or a token array's repr."""
    value = body.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [repr(value)]
    if isinstance(value, list):
        return [v if isinstance(v, str) else repr(v) for v in value]
    return []


def render_json(ex: Exchange) -> bytes:
    size = dimensions(ex.model, ex.body)
    floats, packed = _base(size)
    as_base64 = ex.body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(inputs(ex.body)):
        shift = zlib.crc32(text.encode("utf-8", "surrogatepass")) % size
        vector: object
        if as_base64:
            vector = base64.b64encode(packed[4 * shift : 4 * (shift + size)]).decode()
        else:
            vector = floats[shift : shift + size]
        data.append({"object": "embedding", "index": index, "embedding": vector})
    prompt = ex.plan.prompt_tokens
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": ex.model,
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        }
    )
