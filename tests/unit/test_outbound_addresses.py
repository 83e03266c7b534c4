"""Outbound calls refuse internal addresses unless allowed: the address rule, the check of a
URL when it is saved, and the check at the connection, against the resolved addresses."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import uuid4

import httpcore
import pytest

from adapters.outbound import AddressNotAllowed, CheckedBackend, OutboundAddresses, is_internal
from adapters.platform_gateway import HttpPlatformGateway
from adapters.webhooks import WebhookDelivery

INTERNAL = [
    "127.0.0.1", "127.255.255.254", "::1", "169.254.169.254", "169.254.0.1", "fe80::1",
    "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.255", "192.168.1.1", "fc00::1",
    "fd00:ec2::254", "100.64.0.1", "100.127.255.255", "0.0.0.0", "0.1.2.3", "::",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "2002:7f00:1::1",
    "2002:a9fe:a9fe::1", "64:ff9b::a9fe:a9fe", "224.0.0.1", "ff02::1", "240.0.0.1",
    "255.255.255.255", "192.0.2.1", "198.18.0.1",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "93.184.216.34", "2606:4700::1111"]
REFUSE = OutboundAddresses(allow_private=False)
ALLOW = OutboundAddresses(allow_private=True)


@pytest.mark.parametrize("text", INTERNAL)
def test_internal_addresses_are_internal(text: str) -> None:
    assert is_internal(ipaddress.ip_address(text))


@pytest.mark.parametrize("text", PUBLIC)
def test_public_addresses_are_not(text: str) -> None:
    assert not is_internal(ipaddress.ip_address(text))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://[::1]/hook",
        "https://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/admin",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:127.0.0.1]:9/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://LOCALHOST./hook",
        "http://admin.localhost/hook",
        "http://0.0.0.0:8000/",
    ],
)
def test_a_url_naming_an_internal_address_is_refused_when_saved(url: str) -> None:
    with pytest.raises(AddressNotAllowed) as refused:
        REFUSE.check_url(url)
    assert refused.value.code == "address_not_allowed"
    ALLOW.check_url(url)


def test_a_url_naming_a_public_host_is_accepted_when_saved() -> None:
    REFUSE.check_url("https://hooks.example.com/ledger?tenant=7")
    REFUSE.check_url("http://93.184.216.34/hook")


def fake_resolution(monkeypatch: pytest.MonkeyPatch, *addresses: str) -> list[str]:
    asked: list[str] = []

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def test_a_name_is_refused_if_any_address_it_resolves_to_is_internal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_resolution(monkeypatch, "93.184.216.34", "10.0.0.7")
    with pytest.raises(AddressNotAllowed, match="10.0.0.7"):
        REFUSE.resolve("rebinding.example", 443)


def test_the_connection_goes_to_the_address_that_was_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Resolved once, checked, then connected by address: a second resolution (DNS
    rebinding between check and connect) has no say."""
    asked = fake_resolution(monkeypatch, "93.184.216.34")
    connected: list[str] = []

    def connect_tcp(self: Any, host: str, port: int, *args: Any) -> Any:
        connected.append(host)
        return object()

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect_tcp)
    CheckedBackend(REFUSE).connect_tcp("hooks.example", 443)

    assert asked == ["hooks.example"]
    assert connected == ["93.184.216.34"]


class Listener:
    """An HTTP server on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self) -> None:
        self.connections = 0
        listener = self

        class Server(ThreadingHTTPServer):
            def get_request(self) -> Any:
                accepted = super().get_request()
                listener.connections += 1
                return accepted

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.http = Server(("127.0.0.1", 0), Handler)
        self.port = self.http.server_address[1]
        threading.Thread(target=self.http.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture
def listener() -> Iterator[Listener]:
    started = Listener()
    yield started
    started.http.shutdown()
    started.http.server_close()


EVENT = {"event_id": "e-1", "type": "recharge.succeeded", "data": {}}


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0x7f000001", "2130706433"])
def test_a_webhook_to_an_internal_address_is_not_delivered_nor_connected(
    listener: Listener, host: str
) -> None:
    delivery = WebhookDelivery(b"master", REFUSE)
    try:
        assert delivery.deliver(uuid4(), f"http://{host}:{listener.port}/hook", EVENT) == 0
    finally:
        delivery.close()
    assert listener.connections == 0


def test_with_the_setting_on_a_webhook_to_loopback_is_delivered(listener: Listener) -> None:
    delivery = WebhookDelivery(b"master", ALLOW)
    try:
        assert delivery.deliver(uuid4(), f"http://127.0.0.1:{listener.port}/hook", EVENT) == 204
    finally:
        delivery.close()
    assert listener.connections == 1


def test_a_platform_gateway_on_an_internal_address_sends_nothing(listener: Listener) -> None:
    base = f"http://127.0.0.1:{listener.port}"
    with HttpPlatformGateway(base, "partner", "secret", addresses=REFUSE) as gateway:
        result = gateway.recharge(str(uuid4()), "13800000000", "gold", 30)
        status = gateway.order_status(str(uuid4()))
    assert (result.outcome, result.cause) == ("unknown", "transport")
    assert result.reason is not None and "outbound address refused" in result.reason
    assert status.outcome == "unknown"
    assert listener.connections == 0
