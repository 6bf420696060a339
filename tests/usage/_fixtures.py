"""The recorded provider responses, wherever they live.

``QUOTAGATE_FIXTURES`` wins; otherwise the copy committed in ``tests/fixtures/providers`` (a clean clone
in CI has nothing else); otherwise the shared set beside the repository, ``../shared/fixtures/providers``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from quotagate.apis import Api, api_for_path

REPO = Path(__file__).resolve().parents[2]
REPO_COPY = REPO / "tests" / "fixtures" / "providers"
SHARED = REPO.parent / "shared" / "fixtures" / "providers"
# Read at import (collection): the suite's autouse fixture clears QUOTAGATE_* before each test runs.
FIXTURES_ENV = os.environ.get("QUOTAGATE_FIXTURES")


def fixtures_root(env: str | None = FIXTURES_ENV) -> Path:
    if env:
        return Path(env)
    return REPO_COPY if REPO_COPY.is_dir() else SHARED


@dataclass(frozen=True)
class Case:
    id: str  # "<provider>/<case>"
    api: Api
    streaming: bool  # the response is text/event-stream
    status: int
    body: bytes
    meta: dict[str, object]


@cache
def all_cases() -> tuple[Case, ...]:
    root = fixtures_root()
    index = json.loads((root / "index.json").read_text())
    cases = []
    for entry in index:
        case_dir = root / entry["dir"]
        meta = json.loads((case_dir / "meta.json").read_text())
        api = api_for_path(meta["endpoint"])
        assert api is not None, entry["dir"]
        cases.append(
            Case(
                id=entry["dir"],
                api=api,
                streaming=entry["response_file"] == "response.sse",
                status=meta["status"],
                body=(case_dir / entry["response_file"]).read_bytes(),
                meta=meta,
            )
        )
    return tuple(cases)


def case(case_id: str) -> Case:
    return next(c for c in all_cases() if c.id == case_id)


def stream_cases() -> list[Case]:
    return [c for c in all_cases() if c.streaming]
