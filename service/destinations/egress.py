"""The egress policy: which network addresses a destination may connect to.

Literal addresses are checked when a destination is saved (`check_destination`); every
connection is checked again after name resolution (`EgressResolver`, `socket_factory`,
`resolve_allowed`), so a name that resolves somewhere else later (DNS rebinding) gains
nothing. By default loopback, link-local (cloud metadata), unspecified, multicast and
broadcast addresses are refused; `SYNC_EGRESS_ALLOW` lets CIDRs through even so and
`SYNC_EGRESS_DENY` refuses more. The most specific matching CIDR decides; on a tie, deny.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from service.core.errors import BatchRejected

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: In SYNC_EGRESS_ALLOW: local socket and file paths (a PostgreSQL DSN's unix socket, a
#: certificate file named in a destination configuration) are allowed.
LOCAL_PATHS = "unix"

_REFUSED_BY_DEFAULT: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("a loopback address", ("127.0.0.0/8", "::1/128")),
    ("a link-local address", ("169.254.0.0/16", "fe80::/10")),
    ("an unspecified address", ("0.0.0.0/8", "::/128")),
    ("a multicast address", ("224.0.0.0/4", "ff00::/8")),
    ("a broadcast address", ("255.255.255.255/32",)),
    # Metadata services outside link-local space (AWS over IPv6, Alibaba Cloud).
    ("a cloud metadata address", ("fd00:ec2::254/128", "100.100.100.200/32")),
)
_DEFAULT_NETWORKS: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(cidr), reason) for reason, cidrs in _REFUSED_BY_DEFAULT for cidr in cidrs
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class EgressRefused(BatchRejected):
    """A destination aimed at an address the policy refuses: no batch can succeed, so the run
    fails and its rows stay pending. The message names the host, never what answered there."""

    fatal = True


class AddressRefused(OSError):
    """Raised inside a connection attempt (resolver, socket factory) for a refused address."""


def parse_networks(entries: Iterable[str], setting: str) -> tuple[tuple[IPNetwork, ...], bool]:
    """CIDRs (a bare address is a /32 or /128) and whether `unix` was among them; ValueError
    naming the entry otherwise."""
    networks: list[IPNetwork] = []
    local_paths = False
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        if entry.lower() == LOCAL_PATHS:
            local_paths = True
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            where = f"{setting}: " if setting else ""
            raise ValueError(f"{where}{entry!r} is not a CIDR such as 10.0.0.0/8") from None
    return tuple(networks), local_paths


def parse_address(text: str) -> IPAddress | None:
    """An IP address written as a host (brackets and an IPv6 zone stripped), else None."""
    host = text.strip().removeprefix("[").removesuffix("]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries to an IPv4 host (mapped, compatible, 6to4, NAT64)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    packed = int(address)
    if packed >> 32 == 0 and packed > 1:  # ::a.b.c.d, the deprecated compatible form
        return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    if address in _NAT64:
        return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    return None


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Where destinations may connect. The default refuses what `_REFUSED_BY_DEFAULT` names."""

    allow: tuple[IPNetwork, ...] = ()
    deny: tuple[IPNetwork, ...] = ()
    #: Unix sockets and local files named by a destination (allowed by `unix` in the allow list).
    local_paths: bool = False

    @classmethod
    def from_settings(cls, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> EgressPolicy:
        """From the entries of SYNC_EGRESS_ALLOW and SYNC_EGRESS_DENY."""
        allowed, local_paths = parse_networks(allow, "SYNC_EGRESS_ALLOW")
        denied, _ = parse_networks(deny, "SYNC_EGRESS_DENY")
        return cls(allowed, denied, local_paths)

    def refusal(self, address: IPAddress | str) -> str | None:
        """Why the policy refuses `address`, or None when a destination may connect to it."""
        if isinstance(address, str):
            parsed = parse_address(address)
            if parsed is None:
                return f"{address!r} is not an IP address"
            address = parsed
        if isinstance(address, ipaddress.IPv6Address):
            embedded = _embedded_ipv4(address)
            if embedded is not None:
                if address.ipv4_mapped is not None:  # the very same IPv4 host
                    return self.refusal(embedded)
                return self._refusal(address) or self.refusal(embedded)
        return self._refusal(address)

    def _refusal(self, address: IPAddress) -> str | None:
        best: tuple[int, bool] | None = None  # (prefix length, allowed)
        for networks, allowed in ((self.deny, False), (self.allow, True)):
            for network in networks:
                if address.version == network.version and address in network:
                    candidate = (network.prefixlen, allowed)
                    if best is None or candidate[0] > best[0]:
                        best = candidate
        if best is not None:
            return None if best[1] else "an address in SYNC_EGRESS_DENY"
        for network, reason in _DEFAULT_NETWORKS:
            if address.version == network.version and address in network:
                return reason
        return None

    def check_host(self, host: str) -> str | None:
        """For a host as written in a configuration: why a literal address is refused. A name
        passes here; it is checked when it is resolved, on every connection."""
        address = parse_address(host)
        if address is None:
            if host.strip().startswith("["):
                return f"{host!r} is not an IP address"
            return None
        reason = self.refusal(address)
        return None if reason is None else f"{host} is {reason}, refused by the egress policy"

    def check_path(self, path: str) -> str | None:
        """For a local socket or file path named by a configuration."""
        if self.local_paths:
            return None
        return f"local paths ({path}) are refused by the egress policy"

    async def resolve(self, host: str, port: int) -> list[tuple[str, int]]:
        """The allowed (address, port) pairs `host` resolves to now; AddressRefused when it
        resolves only to refused ones. Connect to these, not to the name."""
        literal = parse_address(host)
        if literal is not None:
            candidates = [str(literal)]
        else:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
            candidates = list(dict.fromkeys(str(info[4][0]) for info in infos))
        allowed = [a for a in candidates if self.refusal(a) is None]
        if not allowed:
            reason = self.refusal(candidates[0]) if candidates else "no address"
            raise AddressRefused(f"{host}: {reason}, refused by the egress policy")
        return [(a, port) for a in allowed]

    def socket_factory(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """For aiohttp's TCPConnector: the last check, on the very address being connected,
        literal hosts included (aiohttp does not resolve those)."""
        family, type_, proto, _, sockaddr = addr_info
        reason = self.refusal(str(sockaddr[0]))
        if reason is not None:
            raise AddressRefused(f"{sockaddr[0]} is {reason}, refused by the egress policy")
        return socket.socket(family=family, type=type_, proto=proto)


class EgressResolver(AbstractResolver):
    """aiohttp resolver that drops the addresses the policy refuses after resolving; a name
    left with none fails the connection with AddressRefused."""

    def __init__(self, policy: EgressPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if self._policy.refusal(r["host"]) is None]
        if not allowed:
            reason = self._policy.refusal(results[0]["host"]) if results else "no address"
            raise AddressRefused(f"{host}: {reason}, refused by the egress policy")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def refused_cause(exc: BaseException) -> AddressRefused | None:
    """The AddressRefused somewhere in an exception's causes (aiohttp and asyncpg wrap it)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, AddressRefused):
            return current
        seen.add(id(current))
        inner = getattr(current, "os_error", None)
        if isinstance(inner, AddressRefused):
            return inner
        current = current.__cause__ or current.__context__
    if "refused by the egress policy" in str(exc):  # aiohappyeyeballs joins several errors
        return AddressRefused(str(exc))
    return None
