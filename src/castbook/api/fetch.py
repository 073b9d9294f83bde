"""Fetch an image a client names by URL without letting the URL reach into our own network.

``fetch_image`` is what the HTTP API uses for an ``image`` URL. It defends against
server-side request forgery:

* only ``http``/``https`` (and ``data:`` URIs, decoded locally) are accepted, never
  ``file:``, ``ftp:`` and friends, and never a URL carrying a user name or password;
* the host is resolved once with :func:`socket.getaddrinfo`; if *any* address it resolves to
  is loopback, private, link-local (cloud metadata at 169.254.169.254 included), carrier-grade
  NAT, multicast, unspecified or reserved (also when hidden in an IPv4-mapped, 6to4 or NAT64
  IPv6 address) the fetch is refused before a single packet is sent, unless the policy allows
  private addresses or names the host in ``allowed_hosts``;
* the connection goes to the address that was vetted, not to a second lookup of the name, so
  DNS rebinding between the check and the connect cannot redirect it: the request URL carries
  the IP, the ``Host`` header and the TLS server name (SNI, certificate check) carry the host;
* redirects are followed by hand, at most ``max_redirects`` of them, and every hop is checked
  again (scheme, user info, host, addresses);
* the body is streamed and abandoned as soon as it passes ``max_bytes`` (a ``Content-Length``
  above it is refused before reading); the whole fetch, redirects included, has one deadline
  (``timeout``): each network wait is capped at the time left and a watchdog shuts the socket
  when the deadline passes, so a server trickling bytes cannot hold the request open;
* the bytes must decode as an image (:func:`castbook.images.open_image`); they are returned
  untouched.

Every failure is an :class:`ImageFetchError` (a :class:`~castbook.errors.FieldError` for the
``image`` field) whose message names the URL, without its query string, fragment or user info,
and says what was wrong; content that is not a usable image raises the
:class:`~castbook.errors.ImageError` that :func:`~castbook.images.open_image` raises.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import httpx

from castbook.errors import FieldError, UnsupportedImageError
from castbook.images import MAX_FILE_BYTES, open_image

__all__ = [
    "FetchPolicy",
    "ImageFetchError",
    "address_problem",
    "decode_data_uri",
    "fetch_image",
    "redact_url",
]

FIELD = "image"

_SCHEMES = frozenset({"http", "https"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MB = 1024 * 1024
_MAX_URL_CHARS = 8192
_SHOWN_CHARS = 200
_USER_AGENT = "castbook (image fetch)"
_ACCEPT = "image/png, image/jpeg, image/webp, image/*;q=0.8, */*;q=0.1"

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class FetchPolicy:
    """What :func:`fetch_image` may fetch and how much of it.

    ``allow_private`` lifts the address check entirely (tests, a self-hosted setup fetching
    from its own network); ``allowed_hosts`` lifts it for those host names only (compared
    without case and without a trailing dot). Redirect targets are checked against the same
    policy.
    """

    allow_private: bool = False
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    max_bytes: int = MAX_FILE_BYTES
    timeout: float = 15.0
    max_redirects: int = 3

    def __post_init__(self) -> None:
        hosts = self.allowed_hosts
        if isinstance(hosts, str):
            hosts = (hosts,)
        object.__setattr__(self, "allowed_hosts", frozenset(_normal_host(h) for h in hosts))
        if self.max_bytes <= 0:
            raise ValueError(f"FetchPolicy.max_bytes must be positive, not {self.max_bytes}")
        if not self.timeout > 0:
            raise ValueError(f"FetchPolicy.timeout must be positive, not {self.timeout}")
        if self.max_redirects < 0:
            raise ValueError(
                f"FetchPolicy.max_redirects must be 0 or more, not {self.max_redirects}"
            )

    def allows_host(self, host: str) -> bool:
        return _normal_host(host) in self.allowed_hosts


class ImageFetchError(FieldError):
    """The image URL could not be fetched; ``url`` is the redacted URL, ``status`` the HTTP
    status when the server answered with an error."""

    def __init__(self, url: str, message: str, *, status: int | None = None) -> None:
        self.url = url
        self.status = status
        super().__init__(FIELD, message)


# --------------------------------------------------------------------------------------------
# Public entry points


def fetch_image(url: str, policy: FetchPolicy = FetchPolicy()) -> bytes:
    """Return the bytes of the image at ``url`` (``http``, ``https`` or a ``data:`` URI).

    Raises :class:`ImageFetchError` when the URL is refused or the fetch fails, and an
    :class:`~castbook.errors.ImageError` when what came back is not a usable image.
    """
    if not isinstance(url, str):
        raise FieldError(FIELD, f"must be a URL string, not {type(url).__name__}")
    text = url.strip()
    if not text:
        raise FieldError(FIELD, "is empty; give an http(s) URL or a data: URI")
    if text[:5].lower() == "data:":
        data = decode_data_uri(text, policy.max_bytes)
        open_image(data, source=f"the data URI {_shown_data_uri(text)}")
        return data
    if len(text) > _MAX_URL_CHARS:
        raise ImageFetchError(
            redact_url(text),
            f"the URL {redact_url(text)} is {len(text)} characters long; "
            f"the limit is {_MAX_URL_CHARS}",
        )
    return _Fetch(policy).run(text)


def decode_data_uri(uri: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Decode a ``data:`` URI (``data:image/png;base64,...``, or percent-encoded) to bytes.

    The size is checked before decoding, so an oversize URI costs no decoding. The media
    type, when given, must be ``image/*``; the bytes themselves are not validated here.
    """
    shown = _shown_data_uri(uri)

    def fail(reason: str) -> ImageFetchError:
        return ImageFetchError(shown, f"the data URI {shown} {reason}")

    if uri[:5].lower() != "data:":
        raise fail("is not a data: URI")
    header, comma, payload = uri[5:].partition(",")
    if not comma:
        raise fail("has no comma between its media type and its data")
    params = [part.strip().lower() for part in header.split(";")]
    media_type, is_base64 = params[0], len(params) > 1 and params[-1] == "base64"
    if media_type and not media_type.startswith("image/"):
        raise fail(f"says its content is {media_type}, not an image")
    limit = _describe_bytes(max_bytes)
    if is_base64:
        if "%" in payload:
            payload = urllib.parse.unquote(payload)
        payload = "".join(payload.split())  # line breaks and spaces are allowed in base64
        # Decoded size, known before decoding: 3 bytes per 4 characters, less the padding.
        estimate = len(payload) * 3 // 4 - (len(payload) - len(payload.rstrip("=")))
        if estimate > max_bytes:
            raise fail(f"holds about {_describe_bytes(estimate)}; the limit is {limit}")
        if "-" in payload or "_" in payload:  # the URL-safe alphabet
            payload = payload.replace("-", "+").replace("_", "/")
        payload += "=" * (-len(payload) % 4)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise fail("is not valid base64") from None
    else:
        if len(payload) > 3 * max_bytes:  # even all-%XX text decodes to a third of its length
            raise fail(f"is over the limit of {limit}")
        data = urllib.parse.unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise fail(f"holds {_describe_bytes(len(data))}; the limit is {limit}")
    if not data:
        raise fail("holds no data")
    return data


def address_problem(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``address`` must not be fetched from (``"a loopback address"``, ...), or None when
    it is a public unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = address_problem(embedded)
            if inner is not None:
                return f"{inner} ({embedded}) in IPv6 form"
        if ip.is_site_local:
            return "a site-local address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (cloud metadata services live there)"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "a carrier-grade NAT address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "not a public address"
    return None


def redact_url(url: str) -> str:
    """``url`` fit for an error message: no user info, query string or fragment, bounded."""
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
        shown = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else parts.path
    except ValueError:
        shown = url.split("?", 1)[0].split("#", 1)[0]
        if "@" in shown:
            scheme, sep, rest = shown.partition("://")
            shown = f"{scheme}{sep}{rest.rpartition('@')[2]}"
    if len(shown) > _SHOWN_CHARS:
        shown = shown[: _SHOWN_CHARS - 1] + "…"
    return shown


# --------------------------------------------------------------------------------------------
# The fetch itself


@dataclass(frozen=True)
class _Target:
    url: httpx.URL
    host: str  # ASCII (IDNA), lower case, no brackets
    port: int
    host_header: str  # host[:port] as the URL gave it, brackets included
    shown: str  # redacted URL for messages


class _Fetch:
    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy
        self.deadline = time.monotonic() + policy.timeout
        self.origin = ""  # the URL the caller gave, once a redirect moved us away from it

    def run(self, text: str) -> bytes:
        target = self._target(text)
        self.origin = target.shown
        # An explicit transport: no proxies from the environment (they would undo the pinning).
        transport = httpx.HTTPTransport(retries=0, verify=_tls_context())
        with httpx.Client(transport=transport, trust_env=False, follow_redirects=False) as client:
            for hop in range(self.policy.max_redirects + 1):
                addresses = self._vet(target)
                answer = self._exchange(client, target, addresses)
                if isinstance(answer, _Body):
                    return self._check_image(target, answer)
                if hop == self.policy.max_redirects:
                    break
                try:
                    next_url = target.url.join(answer.location)
                except (httpx.InvalidURL, ValueError, TypeError) as exc:
                    raise self._fail(
                        target, f"the server redirected to an unusable URL ({exc})"
                    ) from None
                target = self._target(next_url)
        raise ImageFetchError(
            self.origin,
            f"cannot fetch {self.origin}: it redirects more than "
            f"{self.policy.max_redirects} time(s)",
        )

    # -- checks --------------------------------------------------------------------------

    def _target(self, raw: str | httpx.URL) -> _Target:
        text = str(raw)
        shown = redact_url(text)
        try:
            url = raw if isinstance(raw, httpx.URL) else httpx.URL(text)
            # A second parser as a cross-check: anything that either of them reads as user
            # info ("user:pass@", or a host hidden behind "\\@") is refused.
            split_netloc = urllib.parse.urlsplit(text).netloc
        except (httpx.InvalidURL, ValueError, TypeError) as exc:
            raise self._fail_shown(shown, f"it is not a valid URL ({exc})") from None
        scheme = url.scheme
        if scheme not in _SCHEMES:
            what = f"{scheme}:" if scheme else "a URL without a scheme"
            raise self._fail_shown(
                shown, f"only http and https URLs (or data: URIs) are accepted, not {what}"
            )
        if url.userinfo or "@" in split_netloc:
            raise self._fail_shown(shown, "URLs with a user name or password are not accepted")
        host = url.raw_host.decode("ascii").lower()
        if not host:
            raise self._fail_shown(shown, "the URL has no host name")
        port = url.port if url.port is not None else _DEFAULT_PORTS[scheme]
        if not 0 < port < 65536:
            raise self._fail_shown(shown, f"port {port} is out of range")
        return _Target(
            url=url,
            host=host,
            port=port,
            host_header=url.netloc.decode("ascii"),
            shown=shown,
        )

    def _vet(self, target: _Target) -> list[str]:
        """Resolve the host once; refuse if any address is not public (policy permitting)."""
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise self._fail(target, f"cannot resolve {target.host} ({reason})") from None
        addresses: list[str] = []
        for family, _, _, _, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6) and sockaddr[0] not in addresses:
                addresses.append(sockaddr[0])
        if not addresses:
            raise self._fail(target, f"{target.host} resolves to no IP address")
        if self.policy.allow_private or self.policy.allows_host(target.host):
            return addresses
        for address in addresses:
            try:
                problem = address_problem(address)
            except ValueError:
                problem = "not an IP address castbook understands"
            if problem is not None:
                literal = _is_ip_literal(target.host)
                who = f"{address} is" if literal else f"{target.host} resolves to {address},"
                raise self._fail(
                    target,
                    f"{who} {problem}; castbook only fetches images from public addresses",
                )
        return addresses

    # -- network -------------------------------------------------------------------------

    def _exchange(self, client: httpx.Client, target: _Target, addresses: list[str]) -> _Answer:
        """One request to the first vetted address that accepts a connection."""
        last_error: Exception | None = None
        for address in addresses:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                break
            watchdog = _Watchdog(self.deadline)
            try:
                request = httpx.Request(
                    "GET",
                    target.url.copy_with(host=address),
                    headers={
                        "Host": target.host_header,
                        "User-Agent": _USER_AGENT,
                        "Accept": _ACCEPT,
                        "Accept-Encoding": "identity",
                    },
                    extensions={
                        "timeout": httpx.Timeout(remaining).as_dict(),
                        "sni_hostname": target.host,
                        "trace": watchdog.trace,
                    },
                )
                return self._send(client, request, target, watchdog)
            except httpx.ConnectError as exc:
                last_error = exc  # try the next vetted address
            except httpx.TimeoutException:
                raise self._timeout(target) from None
            except httpx.HTTPError as exc:
                if watchdog.fired:
                    raise self._timeout(target) from None
                raise self._fail(target, f"the download failed ({_describe_error(exc)})") from None
            except httpx.InvalidURL as exc:
                raise self._fail(target, f"it is not a valid URL ({exc})") from None
            finally:
                watchdog.stop()
        if last_error is None:
            raise self._timeout(target)
        raise self._fail(target, f"cannot connect to {target.host} ({_describe_error(last_error)})")

    def _send(
        self, client: httpx.Client, request: httpx.Request, target: _Target, watchdog: _Watchdog
    ) -> _Answer:
        response = client.send(request, stream=True, follow_redirects=False)
        try:
            status = response.status_code
            if status in _REDIRECTS:
                location = response.headers.get("location", "").strip()
                if not location:
                    raise self._fail(
                        target, f"the server redirected (HTTP {status}) without saying where"
                    )
                return _Redirect(location)
            if not 200 <= status < 300:
                phrase = f" {response.reason_phrase}" if response.reason_phrase else ""
                raise self._fail(
                    target, f"the server answered HTTP {status}{phrase}", status=status
                )
            limit = self.policy.max_bytes
            declared = response.headers.get("content-length", "").strip()
            if declared.isdigit() and int(declared) > limit:
                raise self._fail(
                    target,
                    f"the server says the file is {_describe_bytes(int(declared))}; "
                    f"the limit is {_describe_bytes(limit)}",
                )
            chunks: list[bytes] = []
            total = 0
            for chunk in response.iter_bytes():
                total += len(chunk)
                if total > limit:
                    raise self._fail(
                        target, f"the file is over the limit of {_describe_bytes(limit)}"
                    )
                chunks.append(chunk)
                if time.monotonic() > self.deadline or watchdog.fired:
                    raise self._timeout(target)
            return _Body(b"".join(chunks), response.headers.get("content-type", ""))
        finally:
            response.close()

    def _check_image(self, target: _Target, body: _Body) -> bytes:
        try:
            open_image(body.data, source=target.shown)
        except UnsupportedImageError as exc:
            media_type = body.content_type.split(";", 1)[0].strip().lower()
            if media_type and not media_type.startswith("image/"):
                raise UnsupportedImageError(f"{exc} (the server sent {media_type})") from None
            raise
        return body.data

    # -- messages ------------------------------------------------------------------------

    def _fail(self, target: _Target, reason: str, *, status: int | None = None) -> ImageFetchError:
        return self._fail_shown(target.shown, reason, status=status)

    def _fail_shown(self, shown: str, reason: str, *, status: int | None = None) -> ImageFetchError:
        via = f" (redirected from {self.origin})" if self.origin and shown != self.origin else ""
        return ImageFetchError(shown, f"cannot fetch {shown}{via}: {reason}", status=status)

    def _timeout(self, target: _Target) -> ImageFetchError:
        return self._fail(
            target, f"no complete answer within {self.policy.timeout:g} seconds (timed out)"
        )


@dataclass(frozen=True)
class _Redirect:
    location: str


@dataclass(frozen=True)
class _Body:
    data: bytes
    content_type: str


_Answer = _Redirect | _Body


class _Watchdog:
    """Shuts the connection's socket down when the deadline passes.

    httpx's timeouts bound each network wait, not the whole exchange; this bounds the whole.
    It keeps a duplicate of the TCP socket (taken when httpcore reports the connection made)
    and shuts that down at the deadline, which wakes any read, write or TLS handshake blocked
    on the connection. Closing our duplicate never closes httpx's own socket.
    """

    def __init__(self, deadline: float) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._stopped = False
        self.fired = False
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event != "connection.connect_tcp.complete":
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(sock, socket.socket):
            return
        try:
            duplicate = sock.dup()
        except OSError:
            return
        with self._lock:
            if self._stopped:
                duplicate.close()
                return
            self._sockets.append(duplicate)
            if self.fired:
                _shut(duplicate)

    def _fire(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self.fired = True
            for sock in self._sockets:
                _shut(sock)

    def stop(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._stopped = True
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


# --------------------------------------------------------------------------------------------
# Small helpers


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # httpx's default verification (certifi's CA bundle); loading it takes ~20 ms, so once.
    return httpx.create_ssl_context()


def _normal_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host.isascii():
        with contextlib.suppress(UnicodeError):
            host = host.encode("idna").decode("ascii")
    return host


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _describe_bytes(count: int) -> str:
    if count >= _MB:
        whole, part = divmod(count, _MB)
        return f"{whole} MB" if part == 0 else f"{-(-count * 10 // _MB) / 10:.1f} MB"
    return f"{count:,} bytes"


def _describe_error(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _shown_data_uri(uri: str) -> str:
    head, comma, _ = uri.partition(",")
    shown = head[:60] + ("…" if len(head) > 60 else "")
    return f"{shown},…" if comma else shown
