"""One file per manifest error: each fails with its path-precise message, via the loader and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quotagate.manifest.load import ManifestError, load_file, load_text
from tests.conftest import EXAMPLES
from tests.support.cli import run

BAD = Path(__file__).with_name("bad")
# JSON has no comments, so JSON fixtures carry their expectation here.
JSON_EXPECT = {
    "invalid-json.json": "invalid JSON at line 1 column 39: Expecting property name enclosed in double quotes",
    "duplicate-mapping-key.json": "organizations[0].quotas[1].rpm_limit: duplicate key",
    "non-finite-price.json": "deployment.enabled_features[3].config.rates[1].input: not a finite number: Infinity",
}


def expected_error(path: Path) -> str:
    if path.suffix == ".json":
        return JSON_EXPECT[path.name]
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <message>'"
    return first.removeprefix("# expect: ")


CASES = sorted(BAD.iterdir())


def test_there_are_at_least_fifteen_distinct_error_fixtures() -> None:
    assert len({expected_error(p) for p in CASES}) >= 15


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_bad_manifest_reports_exactly_its_error_with_path(path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_file(path)
    assert [str(p) for p in info.value.problems] == [expected_error(path)]


def test_a_duplicate_key_is_an_error_in_both_formats_not_last_one_wins() -> None:
    """The same document as YAML and JSON, each with a second `rpm_limit` that would raise the limit."""
    for name in ("duplicate-mapping-key.yaml", "duplicate-mapping-key.json"):
        text = (BAD / name).read_text()
        assert text.count("rpm_limit: 999999") + text.count('"rpm_limit": 999999') == 1
        with pytest.raises(ManifestError) as info:
            load_file(BAD / name)
        assert [p.path for p in info.value.problems] == ["organizations[0].quotas[1].rpm_limit"]


def test_every_duplicate_key_is_reported_with_its_path(tmp_path: Path) -> None:
    text = (EXAMPLES / "acme-team.yaml").read_text()
    text = text.replace("  environment_id: acme-prod\n", "  environment_id: acme-prod\n  environment_id: acme-dev\n", 1)
    text = text.replace("tier: basic\n", "tier: basic\n                tier: premium\n", 1)
    with pytest.raises(ManifestError) as info:
        load_text(text)
    assert sorted(p.path for p in info.value.problems) == [
        "deployment.environment_id",
        "organizations[0].projects[0].clients[0].api_keys[0].tier",
    ]
    doc = json.loads((EXAMPLES / "acme-team.json").read_text())
    raw = json.dumps(doc).replace('"tier": "basic"', '"tier": "basic", "tier": "premium"')
    raw = raw.replace('"keepalive": 32', '"keepalive": 32, "keepalive": 64')
    with pytest.raises(ManifestError) as info:
        load_text(raw)
    assert sorted(p.path for p in info.value.problems) == [
        "deployment.gateway.upstreams[0].keepalive",
        "organizations[0].projects[0].clients[0].api_keys[0].tier",
    ]


def test_yaml_anchors_and_merge_keys_are_not_duplicates() -> None:
    text = (EXAMPLES / "acme-team.yaml").read_text()
    text = text.replace("runtime: {}", "runtime: &rt {}\n    x-ignored: *rt", 1)
    with pytest.raises(ManifestError) as info:  # the alias repeats a node: no duplicate, just an unknown field
        load_text(text)
    assert [str(p) for p in info.value.problems] == ["organizations[0].x-ignored: unknown field"]


def test_a_type_error_does_not_hide_a_duplicate_key_id(tmp_path: Path) -> None:
    text = (BAD / "duplicate-key-id.yaml").read_text()
    assert text.count("tpm_limit: 120000") == 1
    bad = tmp_path / "mixed.yaml"
    bad.write_text(text.replace("tpm_limit: 120000", "tpm_limit: -5"))
    with pytest.raises(ManifestError) as info:
        load_file(bad)
    assert [str(p) for p in info.value.problems] == [
        "organizations[0].quotas[1].tpm_limit: Input should be greater than 0",
        "organizations[0].projects[0].clients[0].api_keys[1].key_id: duplicate key id 'da-sk-acme-team' "
        "(first at organizations[0].projects[0].clients[0].api_keys[0].key_id)",
    ]
    assert run(["manifest", "validate", str(bad)]) == 2


def test_reference_checks_on_the_valid_parts_report_original_paths() -> None:
    """An invalid key is left out of the reference checks; the duplicates after it keep their own indices."""
    doc = json.loads((EXAMPLES / "acme-team.json").read_text())
    keys = doc["organizations"][0]["projects"][0]["clients"][0]["api_keys"]
    keys[:] = [
        dict(keys[0], key_id="bad-one", status="paused"),
        dict(keys[0], key_id="key-b"),
        dict(keys[0], key_id="key-b"),
    ]
    doc["deployment"]["gateway"]["upstreams"].append(dict(doc["deployment"]["gateway"]["upstreams"][0]))
    with pytest.raises(ManifestError) as info:
        load_text(json.dumps(doc))
    keys_path = "organizations[0].projects[0].clients[0].api_keys"
    assert [str(p) for p in info.value.problems] == [
        f"{keys_path}[0].status: Input should be 'active', 'suspended' or 'revoked'",
        "deployment.gateway.upstreams[1].name: duplicate upstream 'openai_api' "
        "(first at deployment.gateway.upstreams[0].name)",
        f"{keys_path}[2].key_id: duplicate key id 'key-b' (first at {keys_path}[1].key_id)",
    ]


def test_references_to_a_skipped_part_are_not_reported() -> None:
    """The route's upstream is the one with the type error: no "unknown upstream" on top of it."""
    doc = json.loads((EXAMPLES / "acme-team.json").read_text())
    doc["deployment"]["gateway"]["upstreams"][0]["keepalive"] = "many"
    with pytest.raises(ManifestError) as info:
        load_text(json.dumps(doc))
    assert [p.path for p in info.value.problems] == ["deployment.gateway.upstreams[0].keepalive"]


def test_all_errors_are_reported_at_once(tmp_path: Path) -> None:
    text = (BAD / "negative-tpm.yaml").read_text().replace("rpm_limit: 40", "rpm_limit: -1")
    text = text.replace("project_slug: team-ai", "project_slug: Team AI")
    bad = tmp_path / "many.yaml"
    bad.write_text(text)
    with pytest.raises(ManifestError) as info:
        load_file(bad)
    paths = {p.path for p in info.value.problems}
    assert {
        "organizations[0].quotas[1].tpm_limit",
        "organizations[0].quotas[2].rpm_limit",
        "organizations[0].projects[0].project_slug",
    } <= paths


def test_cli_validate_exits_2_and_names_the_path(capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["manifest", "validate", str(BAD / "duplicate-key-id.yaml")])
    assert code == 2
    err = capsys.readouterr().err
    assert "organizations[0].projects[0].clients[0].api_keys[1].key_id: duplicate key id 'da-sk-acme-team'" in err


def test_cli_validate_json_lists_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["manifest", "validate", "--json", str(BAD / "route-unknown-upstream.yaml")]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out == {
        "valid": False,
        "errors": [{"path": "deployment.gateway.routes[0].upstream", "message": "unknown upstream 'openai_typo'"}],
    }
