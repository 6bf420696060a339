"""What the fake provider records below HTTP: every accepted TCP connection, and each TLS handshake's SNI."""

from __future__ import annotations

import socket
import ssl
import time

import httpx

from quotagate.fake_provider.testing import FakeProvider, running_fake_provider


def _port(fake: FakeProvider) -> int:
    return int(fake.base_url.rsplit(":", 1)[1])


def _until_accepted(fake: FakeProvider, count: int, timeout_s: float = 5.0) -> dict[str, object]:
    """The server counts an accept on its own loop; wait until it has (or fail with what it saw)."""
    deadline = time.monotonic() + timeout_s
    while (seen := fake.connections())["accepted"] < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} accepted connections, saw {seen}")
        time.sleep(0.01)
    return seen


def test_a_connection_that_sends_nothing_is_counted_and_requests_share_a_connection() -> None:
    with running_fake_provider() as fake:
        assert fake.connections() == {"accepted": 0, "tls_server_names": []}
        socket.create_connection(("127.0.0.1", _port(fake))).close()
        _until_accepted(fake, 1)
        with httpx.Client() as client:  # keep-alive: two requests, one more connection
            for _ in range(2):
                assert client.get(fake.base_url + "/v1/models").status_code == 200
        assert fake.connections() == {"accepted": 2, "tls_server_names": []}
        fake.clear_connections()
        assert fake.connections() == {"accepted": 0, "tls_server_names": []}


def test_each_tls_handshake_records_the_server_name_the_client_sent() -> None:
    with running_fake_provider(tls=True) as fake:
        port = _port(fake)
        context = ssl.create_default_context(cafile=fake.ca_file)
        for name in ("localhost", None):  # None: an IP address, for which clients send no SNI
            with (
                socket.create_connection(("127.0.0.1", port)) as raw,
                context.wrap_socket(raw, server_hostname=name or "127.0.0.1"),
            ):
                pass
        assert fake.connections() == {"accepted": 2, "tls_server_names": ["localhost", None]}


def test_a_fake_in_a_subprocess_reports_its_connections_over_http() -> None:
    with running_fake_provider(tls=True, in_subprocess=True) as fake:
        with httpx.Client(verify=fake.verify) as client:
            assert client.get(f"https://localhost:{_port(fake)}/v1/models").status_code == 200
        seen = fake.connections()  # the reading is a connection of its own (to 127.0.0.1: no SNI)
        assert seen == {"accepted": 2, "tls_server_names": ["localhost", None]}
        fake.clear_connections()
        assert fake.connections() == {"accepted": 1, "tls_server_names": [None]}
