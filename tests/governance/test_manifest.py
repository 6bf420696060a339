"""The governance fields of the manifest: the example applies idempotently; mistakes are path-precise errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from quotagate.manifest.load import ManifestError, load_text
from tests.conftest import EXAMPLES
from tests.support.gateway import apply_manifest

EXAMPLE = (EXAMPLES / "governance.yaml").read_text()
ORG = "organizations[0]"
PROJECT = f"{ORG}.projects[0]"


def edited(edit: Callable[[dict[str, Any]], None]) -> str:
    doc = yaml.safe_load(EXAMPLE)
    edit(doc)
    return yaml.safe_dump(doc, sort_keys=False)


def test_the_example_is_valid_and_applies_once() -> None:
    from quotagate.app import open_app
    from quotagate.manifest.desired import desired_state
    from quotagate.store.manifest_apply import plan_manifest

    apply_manifest(EXAMPLE)
    app = open_app()
    with app.db.read() as session:
        assert plan_manifest(session, desired_state(load_text(EXAMPLE))).empty
    app.close()


def org(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["organizations"][0]  # type: ignore[no-any-return]


def project(doc: dict[str, Any]) -> dict[str, Any]:
    return org(doc)["projects"][0]  # type: ignore[no-any-return]


def rule(doc: dict[str, Any], i: int) -> dict[str, Any]:
    return org(doc)["alerts"]["rules"][i]  # type: ignore[no-any-return]


CASES: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    (
        "cidr with host bits",
        lambda d: project(d).update(ip_allowlist=["10.0.0.1/8"]),
        f"{PROJECT}.ip_allowlist[0]",
        "'10.0.0.1/8' is not a CIDR (10.0.0.1/8 has host bits set)",
    ),
    (
        "not an address",
        lambda d: project(d)["clients"][0].update(ip_allowlist=["localhost"]),
        f"{PROJECT}.clients[0].ip_allowlist[0]",
        "is not a CIDR",
    ),
    (
        "empty allowlist",
        lambda d: project(d).update(ip_allowlist=[]),
        f"{PROJECT}.ip_allowlist",
        "at least 1 item",
    ),
    (
        "actors without secret",
        lambda d: project(d).update(actors={"policy": "required"}),
        f"{PROJECT}.actors",
        "policy 'required' needs a signing_secret (env:VAR)",
    ),
    (
        "literal secret",
        lambda d: project(d).update(actors={"policy": "required", "signing_secret": "hunter2"}),
        f"{PROJECT}.actors.signing_secret",
        "String should match pattern",
    ),
    (
        "bad actor policy",
        lambda d: project(d)["actors"].update(policy="sometimes"),
        f"{PROJECT}.actors.policy",
        "Input should be 'off', 'optional' or 'required'",
    ),
    (
        "bad regex",
        lambda d: project(d)["prompt_logging"]["redact"].append({"name": "broken", "pattern": "(unclosed"}),
        f"{PROJECT}.prompt_logging.redact[1].pattern",
        "invalid regular expression",
    ),
    (
        "redact without redacted mode",
        lambda d: project(d)["prompt_logging"].update(mode="full"),
        f"{PROJECT}.prompt_logging",
        "redact patterns apply only with mode: redacted",
    ),
    (
        "zero retention",
        lambda d: project(d)["prompt_logging"].update(retention_days=0),
        f"{PROJECT}.prompt_logging.retention_days",
        "greater than or equal to 1",
    ),
    (
        "unsigned json receiver",
        lambda d: org(d)["alerts"]["receivers"][0].pop("signing_secret"),
        f"{ORG}.alerts.receivers[0]",
        "a json receiver needs a signing_secret (env:VAR)",
    ),
    (
        "receiver url",
        lambda d: org(d)["alerts"]["receivers"][0].update(url="ftp://x"),
        f"{ORG}.alerts.receivers[0].url",
        "String should match pattern",
    ),
    (
        "unknown receiver",
        lambda d: rule(d, 1).update(receivers=["pager"]),
        f"{ORG}.alerts.rules[1].receivers[0]",
        "unknown receiver 'pager'",
    ),
    (
        "duplicate rule id",
        lambda d: rule(d, 1).update(rule_id="org-spend"),
        f"{ORG}.alerts.rules[1].rule_id",
        "duplicate alert rule 'org-spend'",
    ),
    (
        "unknown scope",
        lambda d: rule(d, 2).update(project_id="proj-nope"),
        f"{ORG}.alerts.rules[2].project_id",
        "unknown project 'proj-nope' in this organization",
    ),
    (
        "field of another kind",
        lambda d: rule(d, 0).update(below=5),
        f"{ORG}.alerts.rules[0]",
        "below not allowed for kind 'spend_cap'",
    ),
    (
        "spend rule without a cap",
        lambda d: rule(d, 0).update(scope_type="project", project_id="proj-demo"),
        f"{ORG}.alerts.rules[0]",
        "kind 'spend_cap' needs a quota with monthly_spend_limit on this scope",
    ),
    (
        "anomaly without minimum",
        lambda d: rule(d, 4).pop("min_spend"),
        f"{ORG}.alerts.rules[4]",
        "kind 'spend_anomaly' needs min_spend",
    ),
    (
        "threshold out of range",
        lambda d: rule(d, 0).update(thresholds=[0]),
        f"{ORG}.alerts.rules[0].thresholds[0]",
        "greater than or equal to 1",
    ),
]


@pytest.mark.parametrize(("name", "edit", "path", "message"), CASES, ids=[c[0] for c in CASES])
def test_mistakes(name: str, edit: Callable[[dict[str, Any]], None], path: str, message: str) -> None:
    with pytest.raises(ManifestError) as info:
        load_text(edited(edit))
    found = {p.path: p.message for p in info.value.problems}
    assert path in found, found
    assert message in found[path]
