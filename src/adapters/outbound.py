"""Outbound calls (webhook deliveries, platform gateways) reach the public internet only.

A channel sets its webhook URL, so without a rule any reseller's sub-channel could make the
server call its internal network (a metadata service, a database, an admin page). Loopback,
link-local, private, shared (100.64/10), unspecified, multicast and reserved addresses, and
metadata hostnames, are refused unless `LEDGER_OUTBOUND_ALLOW_PRIVATE` allows them (the
sandbox's default: its platform listens on 127.0.0.1).

The check is made where the connection is made: the host is resolved once, every address it
resolves to is checked, and the connection goes to a checked address, so a name that resolves
to a public address when a URL is saved and to an internal one when it is called (DNS
rebinding) is still refused. TLS still verifies the certificate against the URL's host name.
Proxies from the environment are ignored (they would connect on our behalf, unchecked).
"""

from __future__ import annotations

import ipaddress
import socket
import typing
from urllib.parse import urlsplit

import httpcore
import httpx

from ledger.errors import DomainError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.internal",
        "instance-data",
        "instance-data.ec2.internal",
        "localhost",
    }
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AddressNotAllowed(DomainError):
    """An outbound URL names, or resolves to, an internal address."""

    code = "address_not_allowed"


def embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), which is what is reached."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_internal(address: Address) -> bool:
    """Anything but a global unicast address: loopback, link-local (169.254/16, fe80::/10,
    the metadata services), private (10/8, 172.16/12, 192.168/16, fc00::/7), shared
    (100.64/10), 0.0.0.0/8 and ::, multicast, reserved and documentation ranges."""
    inner = embedded_ipv4(address)
    if inner is not None and is_internal(inner):
        return True
    return not address.is_global or address.is_multicast


def is_metadata_host(host: str) -> bool:
    name = host.lower().rstrip(".")
    return name in METADATA_HOSTS or name.endswith(".localhost")


class OutboundAddresses:
    """The rule for one process: `allow_private` lets every address through."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private

    def check_url(self, url: str) -> None:
        """At save time: refuse a URL whose host is an internal address or a metadata name.
        A name is not resolved here (it may resolve otherwise later): the connection checks
        it again, resolved."""
        if self.allow_private:
            return
        host = urlsplit(url).hostname or ""
        self.check_host(host)
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            return
        self.check_address(host, literal)

    def check_host(self, host: str) -> None:
        if not self.allow_private and is_metadata_host(host):
            raise AddressNotAllowed(f"{host} is an internal host; outbound calls go elsewhere")

    def check_address(self, host: str, address: Address) -> None:
        if not self.allow_private and is_internal(address):
            raise AddressNotAllowed(
                f"{host} is an internal address ({address}); outbound calls go to public ones"
            )

    def resolve(self, host: str, port: int) -> list[str]:
        """Every address `host` resolves to, each checked; refused if any one is internal."""
        self.check_host(host)
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise httpcore.ConnectError(f"cannot resolve {host}: {error}") from error
        addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
        for text in addresses:
            self.check_address(host, ipaddress.ip_address(text.split("%", 1)[0]))
        return addresses


class CheckedBackend(httpcore.SyncBackend):
    """httpcore's network backend, connecting only to addresses the rule let through."""

    def __init__(self, addresses: OutboundAddresses) -> None:
        self.addresses = addresses

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        last_error: Exception | None = None
        for address in self.addresses.resolve(host, port):
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as error:
                last_error = error
        raise last_error or httpcore.ConnectError(f"no address for {host}")


class CheckedTransport(httpx.HTTPTransport):
    """An httpx transport whose connections go through `CheckedBackend` (no proxies)."""

    def __init__(self, addresses: OutboundAddresses, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=CheckedBackend(addresses),
        )


def checked_transport(
    addresses: OutboundAddresses | None, limits: httpx.Limits
) -> httpx.HTTPTransport | None:
    """The transport outbound clients use: checked unless every address is allowed."""
    if addresses is None or addresses.allow_private:
        return None
    return CheckedTransport(addresses, limits)
