"""The dependency rules of the design: checked, not just written down."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

DATABASE_MODULES = {"redis", "sqlalchemy", "alembic", "psycopg"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_store_imports_databases() -> None:
    offenders = []
    for path in (REPO / "quotagate").rglob("*.py"):
        if (REPO / "quotagate" / "store") in path.parents:
            continue
        bad = _imports(path) & DATABASE_MODULES
        if bad:
            offenders.append(f"{path.relative_to(REPO)} imports {sorted(bad)}")
    assert not offenders, "only quotagate/store/ may import databases:\n" + "\n".join(offenders)


def test_import_contracts_hold() -> None:
    """import-linter: the core never imports grpc, Envoy, mitmproxy (directly or through anything)."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rule_would_catch_a_violation(tmp_path: Path) -> None:
    """The AST scan itself works: a module importing grpc is reported."""
    sample = tmp_path / "bad.py"
    sample.write_text("import grpc\nfrom sqlalchemy.orm import Session\n")
    assert _imports(sample) == {"grpc", "sqlalchemy"}
