"""Anchor sinks: where signed checkpoints are published, out of reach of whoever can edit the database.

A sink is anything with ``name`` and ``write(checkpoint) -> str`` (returning where it went: a path, a URL,
a receipt id). Adding a public timestamping service or a blockchain anchor is one more class with that
shape, listed by :func:`sinks_from_settings`. Writing the same checkpoint twice must be harmless: two
gateway processes may both publish a pending one.
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from quotagate.ledger.checkpoint import Checkpoint

if TYPE_CHECKING:
    from quotagate.settings import Settings


class AnchorSink(Protocol):
    name: str  # where it publishes, for people

    def write(self, checkpoint: Checkpoint) -> str:
        """Publish `checkpoint`; returns where it went. Raises OSError when it could not."""
        ...


class DirectorySink:
    """One JSON file per checkpoint: ``DIR/<org>/<seq>-<signed_at>.json`` (point DIR at WORM storage)."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser()
        self.name = f"directory {self.root}"

    def write(self, checkpoint: Checkpoint) -> str:
        folder = self.root / checkpoint.org
        folder.mkdir(parents=True, exist_ok=True)
        stamp = checkpoint.signed_at.replace(":", "").replace("+0000", "Z")
        path = folder / f"{checkpoint.seq:012d}-{stamp}.json"
        # Written under a temporary name and renamed: a reader never sees half a checkpoint.
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump(checkpoint.to_json(), f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return str(path)


class HttpSink:
    """POSTs the checkpoint as JSON; any 2xx answer counts as published."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url
        self.name = url
        self.timeout_s = timeout_s

    def write(self, checkpoint: Checkpoint) -> str:
        request = urllib.request.Request(  # noqa: S310 - the operator configures the URL
            self.url,
            data=json.dumps(checkpoint.to_json()).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                status = response.status
        except (urllib.error.URLError, TimeoutError) as exc:
            raise OSError(f"anchor {self.url}: {exc}") from exc
        if not 200 <= status < 300:
            raise OSError(f"anchor {self.url}: HTTP {status}")
        return self.url


def anchor_dir(settings: Settings) -> Path:
    """The local anchor directory every process publishes to (and `audit verify` reads by default)."""
    return (settings.ledger_anchor_dir or settings.home / "checkpoints").expanduser()


def sinks_from_settings(settings: Settings) -> list[AnchorSink]:
    sinks: list[AnchorSink] = [DirectorySink(anchor_dir(settings))]
    if settings.ledger_anchor_url is not None:
        sinks.append(HttpSink(settings.ledger_anchor_url))
    return sinks
