"""The recorded fixtures the usage tests run on: where they are found, and that the copy is current."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import pytest

from ._fixtures import FIXTURES_ENV, REPO_COPY, SHARED, all_cases, fixtures_root


def test_the_env_var_wins(tmp_path: Path) -> None:
    assert fixtures_root(str(tmp_path)) == tmp_path


def test_the_env_var_is_read_before_the_suite_clears_it() -> None:
    assert fixtures_root() == fixtures_root(FIXTURES_ENV)


def test_the_repo_copy_is_the_default() -> None:
    assert fixtures_root(None) == REPO_COPY
    assert (REPO_COPY / "README.md").is_file()
    assert (REPO_COPY / "index.json").is_file()


def test_every_indexed_case_has_its_files() -> None:
    root = fixtures_root()
    index = json.loads((root / "index.json").read_text())
    on_disk = {f"{p.parent.parent.name}/{p.parent.name}" for p in root.glob("*/*/meta.json")}
    assert {entry["dir"] for entry in index} == on_disk
    assert len(all_cases()) == len(index)
    for entry in index:
        assert (root / entry["dir"] / entry["response_file"]).is_file()
        assert (root / entry["dir"] / "request.json").is_file()


@pytest.mark.skipif(not SHARED.is_dir(), reason="no shared fixture set beside this checkout")
def test_the_repo_copy_matches_the_shared_set() -> None:
    def differences(cmp: filecmp.dircmp[str]) -> list[str]:
        found = [*cmp.left_only, *cmp.right_only, *cmp.diff_files, *cmp.funny_files]
        for sub in cmp.subdirs.values():
            found += differences(sub)
        return found

    assert differences(filecmp.dircmp(REPO_COPY, SHARED)) == []
