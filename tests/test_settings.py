"""Settings: one typed object from the environment and/or a TOML file; docs generated from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quotagate.errors import ConfigError
from quotagate.manifest.schema import manifest_json_schema
from quotagate.settings import load_settings, settings_reference_markdown
from tests.conftest import REPO


def test_defaults_are_the_embedded_backends(isolated_home: Path) -> None:
    s = load_settings()
    assert s.home == isolated_home
    assert s.embedded
    assert s.effective_database_url == f"sqlite:///{isolated_home / 'quotagate.db'}"


def test_environment_beats_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "q.toml"
    cfg.write_text('redis_url = "redis://file:6379/0"\nredis_prefix = "fromfile"\n')
    monkeypatch.setenv("QUOTAGATE_CONFIG", str(cfg))
    monkeypatch.setenv("QUOTAGATE_REDIS_PREFIX", "fromenv")
    s = load_settings()
    assert s.redis_url == "redis://file:6379/0"
    assert s.redis_prefix == "fromenv"
    assert not s.embedded


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("QUOTAGATE_REDIS_TIMEOUT_MS", "0", "QUOTAGATE_REDIS_TIMEOUT_MS"),
        ("QUOTAGATE_SPEND_TIMEZONE", "Mars/Olympus", "unknown time zone"),
        ("QUOTAGATE_MAX_REQUEST_BYTES", "lots", "QUOTAGATE_MAX_REQUEST_BYTES"),
    ],
)
def test_bad_values_are_clear_errors(var: str, value: str, fragment: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=fragment):
        load_settings()


def test_missing_explicit_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QUOTAGATE_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


def test_settings_docs_are_current() -> None:
    assert (REPO / "docs" / "settings.md").read_text() == settings_reference_markdown(), (
        "docs/settings.md is stale: quotagate config docs > docs/settings.md"
    )


def test_manifest_schema_file_is_current() -> None:
    on_disk = json.loads((REPO / "docs" / "manifest.schema.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest_json_schema(), default=str)), (
        "docs/manifest.schema.json is stale: quotagate manifest schema > docs/manifest.schema.json"
    )
