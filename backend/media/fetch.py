"""Fetch an image by URL without letting the URL choose where Quorum connects.

``fetch_image(url, policy=...)`` is the one way Quorum downloads a third-party image (the
web UI's image proxy; anything that embeds images by URL). Before any connection:

- the scheme must be ``http`` or ``https``, with a host and no user name or password;
- the host must be on the allow-list (``FetchPolicy.allow_hosts``): exact names,
  ``*.example.com`` (sub-domains), ``*`` (any name), IP addresses and networks
  (``127.0.0.1``, ``10.1.0.0/16``);
- every address the host resolves to must be public (not private, loopback, link-local
  such as ``169.254.169.254``, multicast, reserved or unspecified) unless it lies in an
  allow-listed address or network. An IPv4-mapped IPv6 address is judged as the IPv4.

The connection then goes to the address that was checked (never resolved again, so DNS
rebinding cannot swap it), with the original ``Host`` header and TLS server name.
Redirects are followed by hand (``max_redirects``), each target checked the same way.
The answer must be 200, declare an image content type, stay under ``max_bytes`` and
arrive within ``timeout_s`` (the whole download); its bytes must be a JPEG, PNG, GIF or
WebP (read by Pillow), and the type returned is the one read from the bytes. Proxies
from the environment are ignored.
"""

from __future__ import annotations

import io
import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import httpx

from backend.errors import Forbidden, QuorumError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]

#: Pillow's format name → the content type served.
IMAGE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif",
                 "WEBP": "image/webp"}


class FetchRefused(Forbidden):
    """The URL or the answer is not allowed (decided before connecting where possible)."""

    code = "fetch_refused"


class FetchFailed(QuorumError):
    """The remote server could not be reached, timed out or answered an error."""

    status = 502
    code = "fetch_failed"


@dataclass(frozen=True)
class FetchPolicy:
    allow_hosts: tuple[str, ...] = ()
    max_bytes: int = 5_000_000
    timeout_s: float = 5.0
    max_redirects: int = 3
    #: The setting that holds the allow-list, named in refusals.
    setting: str = "QUORUM_IMAGE_PROXY_HOSTS"
    names: frozenset[str] = field(init=False)
    suffixes: tuple[str, ...] = field(init=False)
    any_name: bool = field(init=False)
    networks: tuple[IPNetwork, ...] = field(init=False)

    def __post_init__(self) -> None:
        names, suffixes, networks, any_name = set(), [], [], False
        for raw in self.allow_hosts:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            if entry == "*":
                any_name = True
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if entry.startswith("*."):
                suffixes.append(entry[1:])
            else:
                names.add(entry)
        object.__setattr__(self, "names", frozenset(names))
        object.__setattr__(self, "suffixes", tuple(suffixes))
        object.__setattr__(self, "any_name", any_name)
        object.__setattr__(self, "networks", tuple(networks))

    def address_listed(self, ip: IPAddress) -> bool:
        return any(ip.version == n.version and ip in n for n in self.networks)

    def name_listed(self, host: str) -> bool:
        return self.any_name or host in self.names or host.endswith(self.suffixes)


@dataclass(frozen=True)
class FetchedImage:
    content: bytes
    content_type: str
    url: str


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (``address``) and what to say (``host``)."""

    url: str
    scheme: str
    host: str
    port: int
    address: IPAddress
    path: str


def _ip(value: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(value.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _public(ip: IPAddress) -> bool:
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_loopback
                                 or ip.is_link_local or ip.is_private or ip.is_unspecified)


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchFailed(f"the image host {host} could not be resolved") from exc
    return [str(info[4][0]) for info in infos]


def check_url(url: str, *, policy: FetchPolicy,
              resolver: Resolver = system_resolver) -> Target:
    """Where fetching ``url`` would connect, or ``FetchRefused`` with the reason.

    Nothing is sent anywhere; a host name is resolved (``resolver``) only once it is on
    the allow-list."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FetchRefused(f"not a valid URL: {url[:200]!r}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        what = f"{scheme}:" if scheme else "a relative URL"
        raise FetchRefused(f"only http and https images are fetched, not {what}")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise FetchRefused("the image URL has no host")
    if parts.username is not None or parts.password is not None:
        raise FetchRefused("image URLs with a user name or password are not fetched")
    port = port or (443 if scheme == "https" else 80)
    literal = _ip(host)
    if literal is not None:
        if not policy.address_listed(literal):
            if not _public(literal):
                raise FetchRefused(f"the image address {literal} is private, loopback or "
                                   "link-local; only allow-listed networks may be fetched")
            if not policy.any_name:
                raise FetchRefused(f"the image address {literal} is not on the allow-list "
                                   f"({policy.setting})")
        addresses = [literal]
    else:
        if not policy.name_listed(host):
            raise FetchRefused(f"the image host {host} is not on the allow-list "
                               f"({policy.setting})")
        addresses = [ip for ip in (_ip(a) for a in resolver(host, port)) if ip is not None]
        if not addresses:
            raise FetchFailed(f"the image host {host} has no address")
    for ip in addresses:
        if not _public(ip) and not policy.address_listed(ip):
            raise FetchRefused(f"the image host {host} is a private, loopback or link-local "
                               f"address ({ip}); only allow-listed networks may be")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(url=url, scheme=scheme, host=host, port=port, address=addresses[0],
                  path=path)


def _request_url(t: Target) -> str:
    addr = f"[{t.address}]" if t.address.version == 6 else str(t.address)
    return f"{t.scheme}://{addr}:{t.port}{t.path}"


def _host_header(t: Target) -> str:
    default = 443 if t.scheme == "https" else 80
    host = f"[{t.host}]" if ":" in t.host else t.host
    return host if t.port == default else f"{host}:{t.port}"


def _sniff(content: bytes) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(content)) as img:
            return IMAGE_FORMATS.get(img.format or "")
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def fetch_image(url: str, *, policy: FetchPolicy, resolver: Resolver = system_resolver,
                transport: httpx.BaseTransport | None = None) -> FetchedImage:
    """Download the image at ``url`` under ``policy`` (see the module's docstring)."""
    deadline = time.monotonic() + policy.timeout_s
    timeout = httpx.Timeout(policy.timeout_s)
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False,
                      transport=transport) as client:
        current = url
        for _ in range(policy.max_redirects + 1):
            target = check_url(current, policy=policy, resolver=resolver)
            extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
            try:
                with client.stream("GET", _request_url(target),
                                   headers={"Host": _host_header(target),
                                            "Accept": ", ".join(IMAGE_FORMATS.values())},
                                   extensions=extensions) as resp:
                    if resp.is_redirect and "location" in resp.headers:
                        current = urljoin(current, resp.headers["location"])
                        continue
                    return _read(resp, target, policy, deadline)
            except httpx.TimeoutException as exc:
                raise FetchFailed(f"the image server {target.host} did not answer within "
                                  f"{policy.timeout_s:g} s") from exc
            except httpx.HTTPError as exc:
                raise FetchFailed(f"the image could not be fetched from {target.host} "
                                  f"({type(exc).__name__})") from exc
        raise FetchFailed(f"more than {policy.max_redirects} redirects from {url[:200]}")


def _read(resp: httpx.Response, target: Target, policy: FetchPolicy,
          deadline: float) -> FetchedImage:
    if resp.status_code != 200:
        raise FetchFailed(f"the image server {target.host} answered {resp.status_code}")
    declared = resp.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if declared not in IMAGE_FORMATS.values():
        raise FetchRefused(f"the URL is not an image (content type {declared or 'none'})")
    length = resp.headers.get("content-length")
    if length and length.isdigit() and int(length) > policy.max_bytes:
        raise FetchRefused(f"the image is {int(length):,} bytes; the limit is "
                           f"{policy.max_bytes:,}")
    chunks, size = [], 0
    for chunk in resp.iter_bytes():
        size += len(chunk)
        if size > policy.max_bytes:
            raise FetchRefused(f"the image is larger than the limit of {policy.max_bytes:,} "
                               "bytes")
        if time.monotonic() > deadline:
            raise FetchFailed(f"the image from {target.host} took longer than "
                              f"{policy.timeout_s:g} s")
        chunks.append(chunk)
    content = b"".join(chunks)
    sniffed = _sniff(content)
    if sniffed is None:
        raise FetchRefused("the answer is not a JPEG, PNG, GIF or WebP image")
    return FetchedImage(content=content, content_type=sniffed, url=target.url)
