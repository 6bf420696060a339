"""One file per manifest error: each fails with its path-precise message, via the loader and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quotagate.cli.main import main
from quotagate.manifest.load import ManifestError, load_file

BAD = Path(__file__).with_name("bad")
# JSON has no comments, so JSON fixtures carry their expectation here.
JSON_EXPECT = {
    "invalid-json.json": "invalid JSON at line 1 column 39: Expecting property name enclosed in double quotes"
}


def _expected(path: Path) -> str:
    if path.suffix == ".json":
        return JSON_EXPECT[path.name]
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <message>'"
    return first.removeprefix("# expect: ")


CASES = sorted(BAD.iterdir())


def test_there_are_at_least_fifteen_distinct_error_fixtures() -> None:
    assert len({_expected(p) for p in CASES}) >= 15


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_bad_manifest_reports_its_error_with_path(path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_file(path)
    assert _expected(path) in [str(p) for p in info.value.problems]


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
    code = _run(["manifest", "validate", str(BAD / "duplicate-key-id.yaml")])
    assert code == 2
    err = capsys.readouterr().err
    assert "organizations[0].projects[0].clients[0].api_keys[1].key_id: duplicate key id 'da-sk-acme-team'" in err


def test_cli_validate_json_lists_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["manifest", "validate", "--json", str(BAD / "route-unknown-upstream.yaml")]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out == {
        "valid": False,
        "errors": [{"path": "deployment.gateway.routes[0].upstream", "message": "unknown upstream 'openai_typo'"}],
    }


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
