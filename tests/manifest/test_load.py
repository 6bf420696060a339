"""The seed 003 manifest is accepted exactly as written (JSON) and as properly indented YAML."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from quotagate.manifest.load import load_file, load_text
from quotagate.manifest.schema import EnforcementMode, ScopeType
from tests.conftest import EXAMPLES, REPO

SEED = REPO.parent / "shared" / "seeds" / "003_04b0f0cd361b05ca.txt"


def test_example_json_is_the_seed_json_byte_for_byte() -> None:
    if not SEED.exists():
        pytest.skip(f"seed file {SEED} not present in this checkout's parent (provenance check only)")
    text = SEED.read_text()
    start = text.index("\n{\n") + 1
    seed_json = text[start : text.index("Rendered nginx.conf")]
    assert (EXAMPLES / "acme-team.json").read_text() == seed_json


@pytest.mark.parametrize("name", ["acme-team.json", "acme-team.yaml"])
def test_seed_manifest_loads(name: str) -> None:
    m = load_file(EXAMPLES / name)
    assert m.deployment.environment_id == "acme-prod"
    assert m.deployment.gateway.upstreams[0].ssl_name == "api.openai.com"
    assert m.deployment.gateway.credentials[0].api_key == "env:OPENAI_API_KEY"
    cfg = m.cost_config
    assert cfg is not None and cfg.rate_card_version == "openai-standard-2026-06-07"
    # Prices stay exact decimals: no binary float ever sees 0.075.
    assert [c.cache_read for c in cfg.cached_rates] == [Decimal("0.075"), Decimal("0.25")]
    assert isinstance(cfg.rates[0].output, Decimal)
    org = m.organizations[0]
    assert org.organization_slug == "acme"
    assert [q.scope_type for q in org.quotas] == [ScopeType.PROJECT] * 3
    assert org.quotas[0].monthly_spend_limit == Decimal(1200)
    assert org.quotas[1].model_allowlist == ["gpt-5.4-mini"]
    assert all(q.enforcement_mode is EnforcementMode.ENFORCE for q in org.quotas)
    assert org.projects[0].clients[0].api_keys[0].key_id == "da-sk-acme-team"


def test_json_and_yaml_copies_are_the_same_document() -> None:
    assert load_file(EXAMPLES / "acme-team.json") == load_file(EXAMPLES / "acme-team.yaml")


def test_every_example_manifest_is_valid() -> None:
    files = sorted(p for p in EXAMPLES.iterdir() if p.suffix in {".json", ".yaml", ".yml"})
    assert files
    for path in files:
        load_file(path)


def test_yaml_decimal_is_exact_even_for_long_fractions(tmp_path: Path) -> None:
    text = (EXAMPLES / "acme-team.yaml").read_text().replace("cache_read: 0.075 }", "cache_read: 0.074999999999 }")
    m = load_text(text)
    assert m.cost_config is not None
    assert m.cost_config.cached_rates[0].cache_read == Decimal("0.074999999999")
