"""The rendered Envoy configuration: what it promises, checked on the dict and by `envoy --mode validate`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from ext_authz import http_contract as contract
from ext_authz.envoy_config import RenderOptions, render_envoy_config, snapshot_from_manifest
from quotagate.cli.main import main
from quotagate.manifest.load import load_file
from quotagate.snapshot import Snapshot
from tests.conftest import EXAMPLES, REPO
from tests.support.envoy import validate, write_config
from tests.support.gateway import apply_manifest, manifest_text

pytestmark = pytest.mark.envoy
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
# How envoy/example.yaml is rendered (envoy/README.md shows the command).
EXAMPLE_ARGS = [
    "envoy",
    "render",
    "--manifest",
    str(EXAMPLES / "acme-team.yaml"),
    "--http",
    "127.0.0.1:8080",
    "--ca-file",
    SYSTEM_CA,
]


def _snapshot(name: str) -> Snapshot:
    return snapshot_from_manifest(load_file(EXAMPLES / name))


def _render(name: str = "local-demo.yaml", **options: Any) -> dict[str, Any]:
    return render_envoy_config(_snapshot(name), RenderOptions(**{"ca_file": SYSTEM_CA, **options}))


def _hcm(config: dict[str, Any]) -> dict[str, Any]:
    manager: dict[str, Any] = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    return manager["typed_config"]


def _filters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f["typed_config"] for f in _hcm(config)["http_filters"]}


def _clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


def _routes(config: dict[str, Any]) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = _hcm(config)["route_config"]["virtual_hosts"][0]["routes"]
    return routes


def _assert_valid(config: dict[str, Any], tmp_path: Path) -> None:
    result = validate(write_config(config, tmp_path / "envoy.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("manifest", ["acme-team.yaml", "acme-team.json", "local-demo.yaml"])
def test_every_example_renders_a_config_envoy_accepts(manifest: str, tmp_path: Path) -> None:
    _assert_valid(_render(manifest, http_side=("127.0.0.1", 8080)), tmp_path)


def test_unix_socket_workers_and_no_http_side_validate(tmp_path: Path) -> None:
    config = _render(grpc_endpoints=("unix:/run/quotagate/w1.sock", "unix:///run/quotagate/w2.sock"))
    addresses = [
        e["endpoint"]["address"]["pipe"]["path"]
        for e in _clusters(config)["quotagate_grpc"]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert addresses == ["/run/quotagate/w1.sock", "/run/quotagate/w2.sock"]
    assert "quotagate_http" not in _clusters(config)
    assert not any(r["name"] == "http-side" for r in _routes(config))
    _assert_valid(config, tmp_path)


def test_host_name_workers_are_resolved_by_dns(tmp_path: Path) -> None:
    config = _render(grpc_endpoints=("quotagate-1:50051", "quotagate-2:50051"))
    assert _clusters(config)["quotagate_grpc"]["type"] == "STRICT_DNS"


def test_mixed_worker_addresses_are_refused() -> None:
    with pytest.raises(ValueError, match="all host names"):
        _render(grpc_endpoints=("quotagate-1:50051", "127.0.0.1:50052"))


def test_check_fails_closed_with_a_503_after_a_realistic_timeout_and_sees_the_whole_body() -> None:
    authz = _filters(_render())["envoy.filters.http.ext_authz"]
    assert authz.get("failure_mode_allow", False) is False
    assert authz["status_on_error"] == {"code": "ServiceUnavailable"}
    assert authz["clear_route_cache"] is True
    assert authz["with_request_body"] == {
        "max_request_bytes": 8 * 1024 * 1024 + 1,
        "allow_partial_message": True,
        "pack_as_bytes": True,
    }
    assert authz["grpc_service"]["timeout"] == "3s"
    listener = _render()["static_resources"]["listeners"][0]
    assert listener["per_connection_buffer_limit_bytes"] > 8 * 1024 * 1024


def test_check_over_http_validates_fails_closed_and_passes_only_the_contract_headers(tmp_path: Path) -> None:
    config = _render(check_endpoints=("127.0.0.1:50061",), http_side=("127.0.0.1", 8080))
    authz = _filters(config)["envoy.filters.http.ext_authz"]
    assert "grpc_service" not in authz
    assert authz.get("failure_mode_allow", False) is False
    assert authz["status_on_error"] == {"code": "ServiceUnavailable"}
    assert authz["with_request_body"]["max_request_bytes"] == 8 * 1024 * 1024 + 1
    assert authz["with_request_body"].get("pack_as_bytes", False) is False
    service = authz["http_service"]
    assert service["server_uri"]["cluster"] == "quotagate_check"
    assert service["server_uri"]["timeout"] == "3s"
    assert service["path_prefix"] == contract.PATH_PREFIX
    # Envoy, not the client, says where the request came from (IP allowlists read it).
    [added] = service["authorization_request"]["headers_to_add"]
    assert added == {"key": contract.CLIENT_IP_HEADER, "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}
    upstream = [p["exact"] for p in service["authorization_response"]["allowed_upstream_headers"]["patterns"]]
    assert sorted(upstream) == sorted(contract.UPSTREAM_HEADERS)
    check = _clusters(config)["quotagate_check"]
    assert check["health_checks"][0]["http_health_check"]["path"] == contract.HEALTH_PATH
    # The metering stream still goes over gRPC.
    assert "quotagate_grpc_metering" in _clusters(config)
    # A 5xx refusal travels as 403 + its status in metadata: a local reply mapper puts the status back.
    mappers = _hcm(config)["local_reply_config"]["mappers"]
    restored = sorted(m["status_code"] for m in mappers if "status_code" in m and m["status_code"] >= 500)
    assert restored == sorted(contract.OVERRIDDEN_STATUSES)
    _assert_valid(config, tmp_path)


def test_metering_observes_without_waiting_and_never_blocks() -> None:
    metering = _filters(_render())["quotagate.metering"]
    assert metering["observability_mode"] is True
    assert metering["failure_mode_allow"] is True
    assert metering["processing_mode"] == {
        "request_header_mode": "SKIP",
        "response_header_mode": "SEND",
        "response_body_mode": "STREAMED",
        "response_trailer_mode": "SEND",
    }
    assert metering["metadata_options"]["forwarding_namespaces"]["untyped"] == ["envoy.filters.http.ext_authz"]
    assert metering["deferred_close_timeout"] == "1s"


def test_the_rewrite_filter_only_runs_on_marked_requests() -> None:
    wrapped = _filters(_render())["quotagate.rewrite"]
    rewrite = wrapped["extension_config"]["typed_config"]
    assert rewrite["processing_mode"]["request_body_mode"] == "BUFFERED"
    assert rewrite["processing_mode"]["request_header_mode"] == "SKIP"
    (matcher,) = wrapped["xds_matcher"]["matcher_list"]["matchers"]
    predicate = matcher["predicate"]["not_matcher"]["single_predicate"]
    assert predicate["input"]["typed_config"]["header_name"] == "x-quotagate-rewrite"
    assert matcher["on_match"]["action"]["typed_config"]["@type"].endswith("SkipFilter")


def test_filter_order_is_check_rewrite_metering_router() -> None:
    assert list(_filters(_render())) == [
        "envoy.filters.http.ext_authz",
        "quotagate.rewrite",
        "quotagate.metering",
        "envoy.filters.http.router",
    ]


def test_upstream_routes_follow_the_header_check_sets_and_strip_internal_headers() -> None:
    routes = {r["name"]: r for r in _routes(_render())}
    chat = routes["openai_local /v1/chat/completions"]
    assert chat["match"]["path"] == "/v1/chat/completions"
    assert chat["match"]["headers"] == [{"name": "x-quotagate-upstream", "string_match": {"exact": "openai_local"}}]
    assert chat["route"]["cluster"] == "upstream_openai_local"
    assert chat["route"]["timeout"] == "600s"
    assert set(chat["request_headers_to_remove"]) == {"x-quotagate-upstream", "x-quotagate-rewrite", "accept-encoding"}
    assert _routes(_render())[-1]["match"] == {"prefix": "/"}  # Check runs here, before the header exists


def test_prefix_locations_become_prefix_routes() -> None:
    snapshot = _snapshot("local-demo.yaml")
    from dataclasses import replace

    prefixed = replace(snapshot, routes=(replace(snapshot.routes[0], location="/v1/"),))
    routes = render_envoy_config(prefixed, RenderOptions(ca_file=SYSTEM_CA))
    assert any(r["match"].get("prefix") == "/v1/" and r["match"].get("headers") for r in _routes(routes))


def test_the_http_side_is_routed_without_check_or_metering() -> None:
    (side,) = [r for r in _routes(_render(http_side=("127.0.0.1", 8080))) if r["name"] == "http-side"]
    assert side["route"]["cluster"] == "quotagate_http"
    assert side["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["disabled"] is True
    assert side["typed_per_filter_config"]["quotagate.metering"]["disabled"] is True
    import re

    regex = re.compile(side["match"]["safe_regex"]["regex"])
    for path in ("/v1/models", "/v1/models/gpt-4o", "/api/keys", "/admin/x", "/dashboard", "/openapi.json"):
        assert regex.match(path), path
    for path in ("/v1/chat/completions", "/v1/modelsx", "/apix", "/"):
        assert not regex.match(path), path


def test_real_providers_get_tls_with_sni_and_certificate_name_checks() -> None:
    cluster = _clusters(_render("acme-team.yaml"))["upstream_openai_api"]
    assert cluster["type"] == "LOGICAL_DNS"
    tls = cluster["transport_socket"]["typed_config"]
    assert tls["sni"] == "api.openai.com"
    validation = tls["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"] == {"filename": SYSTEM_CA}
    assert validation["match_typed_subject_alt_names"] == [{"san_type": "DNS", "matcher": {"exact": "api.openai.com"}}]
    assert cluster["circuit_breakers"]["thresholds"] == [{"max_connections": 32}]
    (route,) = [r for r in _routes(_render("acme-team.yaml")) if r["name"].startswith("openai_api")]
    assert route["route"]["host_rewrite_literal"] == "api.openai.com"


def test_plain_http_upstreams_have_no_tls() -> None:
    cluster = _clusters(_render())["upstream_openai_local"]
    assert cluster["type"] == "STATIC"
    assert "transport_socket" not in cluster
    protocol = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http_protocol_options" in protocol["explicit_http_config"]


def test_the_grpc_cluster_speaks_http2_is_health_checked_and_is_not_capped_at_1024_streams() -> None:
    cluster = _clusters(_render())["quotagate_grpc"]
    protocol = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in protocol["explicit_http_config"]
    assert "grpc_health_check" in cluster["health_checks"][0]
    assert cluster["circuit_breakers"]["thresholds"][0]["max_requests"] >= 100_000


def test_admin_listens_on_loopback_only_and_access_logs_are_json_on_stdout() -> None:
    config = _render(admin_port=9999)
    assert config["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9999}
    (log,) = _hcm(config)["access_log"]
    assert log["typed_config"]["@type"].endswith("StdoutAccessLog")
    assert "request_id" in log["typed_config"]["log_format"]["json_format"]


def test_timeouts_are_options() -> None:
    authz = _filters(_render(check_timeout=timedelta(milliseconds=1500)))["envoy.filters.http.ext_authz"]
    assert authz["grpc_service"]["timeout"] == "1.500s"


def test_the_example_is_current(tmp_path: Path) -> None:
    out = tmp_path / "example.yaml"
    assert main([*EXAMPLE_ARGS, "-o", str(out)]) == 0
    assert out.read_text() == (REPO / "envoy" / "example.yaml").read_text(), (
        "envoy/example.yaml is stale: quotagate " + " ".join(EXAMPLE_ARGS) + " -o envoy/example.yaml"
    )
    result = validate(REPO / "envoy" / "example.yaml")
    assert result.returncode == 0, result.stderr


def test_render_reads_the_applied_configuration_from_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    apply_manifest(manifest_text("local-demo.yaml", upstream="127.0.0.1:19999"))
    assert main(["envoy", "render", "--grpc", "127.0.0.1:7001", "--grpc", "127.0.0.1:7002", "--format", "json"]) == 0
    import json

    config = json.loads(capsys.readouterr().out)
    endpoints = _clusters(config)["quotagate_grpc"]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"]["port_value"] for e in endpoints] == [7001, 7002]
    upstream = _clusters(config)["upstream_openai_local"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert upstream["endpoint"]["address"]["socket_address"]["port_value"] == 19999


def test_render_reports_a_bad_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"deployment": {"environment_id": "x", "gateway": {"routes": [{"location": 1}]}}}))
    assert main(["envoy", "render", "--manifest", str(bad)]) == 2
    assert "error(s)" in capsys.readouterr().err


def test_render_reports_a_bad_address(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["envoy", "render", "--manifest", str(EXAMPLES / "acme-team.yaml"), "--listen", "nope"])
    assert code == 2
    assert "invalid address" in capsys.readouterr().err
