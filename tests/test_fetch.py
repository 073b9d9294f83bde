"""castbook.api.fetch against real HTTP servers on 127.0.0.1 (no mocks of httpx).

Only loopback is ever a target here. Every test runs under a guard that refuses (and
records) any socket connect to a non-loopback address before it reaches the network, so a
bug that tried to reach 10.x, 169.254.169.254 or a public address fails the test instead of
sending traffic.
"""

from __future__ import annotations

import base64
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from castbook.api.fetch import (
    FetchPolicy,
    ImageFetchError,
    address_problem,
    decode_data_uri,
    fetch_image,
    redact_url,
)
from castbook.errors import (
    CorruptImageError,
    FieldError,
    InvalidInputError,
    UnsupportedImageError,
)
from castbook.images import MAX_FILE_BYTES
from tests.conftest import make_image_bytes

PNG = make_image_bytes()
LOCAL = FetchPolicy(allow_private=True)


# --------------------------------------------------------------------------------------------
# Guard: nothing but loopback may be connected to


@pytest.fixture(autouse=True)
def connect_guard(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Refuse (and record) any connect to a non-loopback address; returns the record."""
    refused: list[object] = []
    real_connect = socket.socket.connect

    def guarded_connect(self: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else None
        try:
            loopback = host is not None and ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            refused.append(address)
            raise ConnectionRefusedError(f"test guard: no connections to {address!r}")
        real_connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: object) -> int:
        try:
            guarded_connect(self, address)
        except OSError as exc:
            return exc.errno or 111
        return 0

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    return refused


# --------------------------------------------------------------------------------------------
# A small real HTTP server


@dataclass
class Server:
    http: ThreadingHTTPServer
    stop: threading.Event
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, Host header)

    @property
    def port(self) -> int:
        return self.http.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    @property
    def paths(self) -> list[str]:
        return [path.split("?", 1)[0] for path, _ in self.requests]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        record = self.server.record
        record.requests.append((self.path, self.headers.get("Host", "")))
        parts = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parts.query))
        route = parts.path
        try:
            self._route(route, query, record.stop)
        except OSError:  # the client hung up on purpose (size limit, timeout)
            self.close_connection = True

    def _route(self, route: str, query: dict[str, str], stop: threading.Event) -> None:
        if route == "/img.png":
            self._send(200, PNG, "image/png")
        elif route == "/img-chunked.png":
            self._chunked(200, [PNG[:100], PNG[100:]], "image/png")
        elif route == "/redirect":
            self._redirect(int(query.get("code", "302")), query["to"])
        elif route.startswith("/chain/"):
            left = int(route.rsplit("/", 1)[1])
            self._redirect(302, f"/chain/{left - 1}" if left > 0 else "/img.png")
        elif route == "/relative":
            self._redirect(301, "img.png")
        elif route == "/no-location":
            self.send_response(302)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif route == "/big-declared":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(MAX_FILE_BYTES + 1))
            self.end_headers()
            self.wfile.flush()
            stop.wait(5)  # never sends the body; the client must refuse on the header alone
            self.close_connection = True
        elif route == "/big-stream":
            self._chunked(200, (b"\0" * 1024 for _ in range(200)), "image/png")
        elif route == "/slow-headers":
            stop.wait(5)
            self._send(200, PNG, "image/png")
        elif route == "/trickle":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(100):
                if stop.wait(0.05):
                    break
                self.wfile.write(b"\0")
                self.wfile.flush()
            self.close_connection = True
        elif route == "/stall-mid-body":
            stop.wait(float(query.get("delay", "0.6")))
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG[:20])
            self.wfile.flush()
            stop.wait(5)
            self.close_connection = True
        elif route == "/page.html":
            self._send(200, b"<!doctype html><html><body>hello</body></html>", "text/html")
        elif route == "/truncated.png":
            self._send(200, PNG[: len(PNG) // 2], "image/png")
        elif route.startswith("/status/"):
            self._send(int(route.rsplit("/", 1)[1]), b"nope", "text/plain")
        else:
            self._send(404, b"not found", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunked(self, status: int, chunks: object, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in chunks:  # type: ignore[attr-defined]
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _redirect(self, status: int, location: str) -> None:
        self.send_response(status)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    record: Server

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hang up on purpose here (limits, timeouts, refused certificates)


def _start(http: _HTTPServer) -> Server:
    record = Server(http=http, stop=threading.Event())
    http.record = record
    threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return record


@pytest.fixture
def server() -> Iterator[Server]:
    record = _start(_HTTPServer(("127.0.0.1", 0), _Handler))
    try:
        yield record
    finally:
        record.stop.set()
        record.http.shutdown()
        record.http.server_close()


def _resolve_to(monkeypatch: pytest.MonkeyPatch, name: str, *answers: str) -> list[str]:
    """Make ``name`` resolve to ``answers`` in turn (the last one repeats); other names resolve
    for real. Returns the list of lookups made for ``name``."""
    real = socket.getaddrinfo
    calls: list[str] = []

    def fake(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(host, bytes):
            host = host.decode()
        if host != name:
            return real(host, port, *args, **kwargs)
        address = answers[min(len(calls), len(answers) - 1)]
        calls.append(address)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sockaddr = (
            (address, int(port or 0), 0, 0)
            if family == socket.AF_INET6
            else (address, int(port or 0))
        )
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return calls


# --------------------------------------------------------------------------------------------
# Addresses that are refused by default, before any traffic


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "[::1]",
        "0.0.0.0",
        "127.1",  # inet_aton shorthand
        "2130706433",  # 127.0.0.1 as one decimal number
        "0x7f000001",  # ... in hex
        "017700000001",  # ... in octal
        "[::ffff:127.0.0.1]",  # IPv4-mapped IPv6
    ],
)
def test_loopback_is_refused_by_default(
    server: Server, connect_guard: list[object], host: str
) -> None:
    url = server.url("/img.png?token=s3cret", host=host)
    with pytest.raises(ImageFetchError) as caught:
        fetch_image(url)
    message = str(caught.value)
    assert message.startswith("image: cannot fetch http://")
    assert f":{server.port}/img.png" in message
    assert "s3cret" not in message and "?" not in message
    assert "loopback" in message or "unspecified" in message
    assert "public addresses" in message
    assert server.requests == [] and connect_guard == []


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://10.0.0.1/face.png", "private"),
        ("http://10.255.255.254:8080/face.png", "private"),
        ("http://192.168.1.10/face.png", "private"),
        ("http://172.16.0.1/face.png", "private"),
        ("http://172.31.255.1/face.png", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://100.64.0.1/face.png", "carrier-grade NAT"),
        ("http://224.0.0.1/face.png", "multicast"),
        ("http://240.0.0.1/face.png", "private"),  # reserved 240/4 (Python counts it private)
        ("https://[fd00::1]/face.png", "private"),
        ("http://[fe80::1]/face.png", "link-local"),
        ("http://[fec0::1]/face.png", "site-local"),
        ("http://[::ffff:10.0.0.1]/face.png", "private"),
        ("http://[::ffff:169.254.169.254]/", "link-local"),
        ("http://[2002:a00:1::]/face.png", "private"),  # 6to4 wrapping 10.0.0.1
        ("http://[64:ff9b::a9fe:a9fe]/", "link-local"),  # NAT64 wrapping 169.254.169.254
    ],
)
def test_private_ranges_are_refused_without_traffic(
    connect_guard: list[object], url: str, problem: str
) -> None:
    with pytest.raises(ImageFetchError) as caught:
        fetch_image(url)
    message = str(caught.value)
    assert problem in message
    assert redact_url(url) in message
    assert connect_guard == []


def test_a_name_resolving_to_loopback_is_refused(
    server: Server, monkeypatch: pytest.MonkeyPatch, connect_guard: list[object]
) -> None:
    # DNS rebinding: a public-looking name whose answer points inside.
    _resolve_to(monkeypatch, "images.example.test", "127.0.0.1")
    with pytest.raises(ImageFetchError) as caught:
        fetch_image(server.url("/img.png", host="images.example.test"))
    assert "images.example.test resolves to 127.0.0.1, a loopback address" in str(caught.value)
    assert server.requests == [] and connect_guard == []


def test_any_bad_address_among_several_refuses(
    monkeypatch: pytest.MonkeyPatch, connect_guard: list[object]
) -> None:
    real = socket.getaddrinfo

    def two_answers(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host != "mixed.example.test":
            return real(host, port, *args, **kwargs)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", two_answers)
    with pytest.raises(ImageFetchError, match=r"resolves to 10\.1\.2\.3, a private address"):
        fetch_image("http://mixed.example.test/face.png")
    assert connect_guard == []


def test_the_vetted_address_is_pinned(
    server: Server, monkeypatch: pytest.MonkeyPatch, connect_guard: list[object]
) -> None:
    # The name is looked up once; a second lookup would say 10.0.0.1. The request must go to
    # the address that was checked, carrying the name in its Host header.
    lookups = _resolve_to(monkeypatch, "images.example.test", "127.0.0.1", "10.0.0.1")
    policy = FetchPolicy(allowed_hosts=frozenset({"Images.Example.Test."}))
    data = fetch_image(server.url("/img.png", host="images.example.test"), policy)
    assert data == PNG
    assert lookups == ["127.0.0.1"]
    assert server.requests == [("/img.png", f"images.example.test:{server.port}")]
    assert connect_guard == []


def test_the_next_vetted_address_is_tried_when_one_refuses(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 127.0.0.2 is loopback too, but the server listens on 127.0.0.1 only.
    real = socket.getaddrinfo

    def two_answers(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host != "images.example.test":
            return real(host, port, *args, **kwargs)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", two_answers)
    policy = FetchPolicy(allowed_hosts=frozenset({"images.example.test"}))
    assert fetch_image(server.url("/img.png", host="images.example.test"), policy) == PNG


def test_the_connect_guard_itself_works(server: Server, connect_guard: list[object]) -> None:
    # 0.0.0.0 is not loopback to the guard (but would only ever reach this machine).
    with pytest.raises(ImageFetchError, match=r"cannot connect to 0\.0\.0\.0"):
        fetch_image(server.url("/img.png", host="0.0.0.0"), LOCAL)
    assert connect_guard == [("0.0.0.0", server.port)]
    assert server.requests == []


def test_an_unresolvable_host_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(ImageFetchError, match=r"cannot resolve nowhere\.example\.test"):
        fetch_image("https://nowhere.example.test/a.png?sig=1")


# --------------------------------------------------------------------------------------------
# Schemes, user info, malformed URLs


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://127.0.0.1/face.png", "not ftp:"),
        ("file:///etc/passwd", "not file:"),
        ("gopher://127.0.0.1:70/", "not gopher:"),
        ("javascript:alert(1)", "not javascript:"),
        ("//127.0.0.1/face.png", "without a scheme"),
        ("face.png", "without a scheme"),
        ("http:///face.png", "no host name"),
        ("http://127.0.0.1:99999/face.png", "port 99999"),
    ],
)
def test_unusable_urls_are_refused(connect_guard: list[object], url: str, expected: str) -> None:
    with pytest.raises(ImageFetchError, match=expected):
        fetch_image(url, LOCAL)
    assert connect_guard == []


@pytest.mark.parametrize(
    "netloc",
    [
        "user:hunter2@127.0.0.1",
        "user@127.0.0.1",
        ":hunter2@127.0.0.1",
        "@127.0.0.1",
        "x\\@127.0.0.1",
    ],
)
def test_user_info_is_refused_and_never_shown(server: Server, netloc: str) -> None:
    url = f"http://{netloc}:{server.port}/img.png"
    with pytest.raises(ImageFetchError) as caught:
        fetch_image(url, LOCAL)
    message = str(caught.value)
    assert "user name or password" in message
    assert "hunter2" not in message
    assert server.requests == []


@pytest.mark.parametrize("bad", ["", "   ", None, 42])
def test_missing_url(bad: object) -> None:
    with pytest.raises(FieldError, match=r"^image: "):
        fetch_image(bad)  # type: ignore[arg-type]


def test_errors_are_field_errors_for_image() -> None:
    with pytest.raises(ImageFetchError) as caught:
        fetch_image("ftp://example.test/a.png")
    error = caught.value
    assert isinstance(error, FieldError) and isinstance(error, InvalidInputError)
    assert error.field == "image"
    assert error.url == "ftp://example.test/a.png"


# --------------------------------------------------------------------------------------------
# Fetching from the local server (allow_private)


def test_a_png_is_fetched(server: Server) -> None:
    assert fetch_image(server.url("/img.png"), LOCAL) == PNG
    assert server.requests == [("/img.png", f"127.0.0.1:{server.port}")]


def test_a_chunked_png_is_fetched(server: Server) -> None:
    assert fetch_image(server.url("/img-chunked.png"), LOCAL) == PNG


def test_allowed_hosts_lifts_the_check_for_that_host_only(server: Server) -> None:
    policy = FetchPolicy(allowed_hosts=frozenset({"localhost"}))
    assert fetch_image(server.url("/img.png", host="localhost"), policy) == PNG
    with pytest.raises(ImageFetchError, match="loopback"):
        fetch_image(server.url("/img.png"), policy)


def test_a_redirect_chain_is_followed(server: Server) -> None:
    # Three redirects, the most the default policy follows.
    assert fetch_image(server.url("/chain/2"), LOCAL) == PNG
    assert server.paths == ["/chain/2", "/chain/1", "/chain/0", "/img.png"]


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_every_redirect_status_is_followed(server: Server, code: int) -> None:
    target = urllib.parse.quote(server.url("/img.png"), safe="")
    assert fetch_image(server.url(f"/redirect?code={code}&to={target}"), LOCAL) == PNG


def test_a_relative_redirect_is_followed(server: Server) -> None:
    assert fetch_image(server.url("/relative"), LOCAL) == PNG
    assert server.paths == ["/relative", "/img.png"]


def test_too_many_redirects(server: Server) -> None:
    with pytest.raises(ImageFetchError) as caught:
        fetch_image(server.url("/chain/3"), LOCAL)  # four redirects
    assert str(caught.value) == (
        f"image: cannot fetch {server.url('/chain/3')}: it redirects more than 3 time(s)"
    )
    assert len(server.requests) == 4  # the original plus three redirects, no more

    with pytest.raises(ImageFetchError, match="more than 0 time"):
        fetch_image(server.url("/chain/0"), FetchPolicy(allow_private=True, max_redirects=0))


def test_a_redirect_to_a_disallowed_host_is_refused(
    server: Server, connect_guard: list[object]
) -> None:
    # Only "localhost" is allowed; the redirect goes to 127.0.0.1, which is re-checked.
    policy = FetchPolicy(allowed_hosts=frozenset({"localhost"}))
    target = server.url("/img.png?key=abc")
    start = server.url(f"/redirect?to={urllib.parse.quote(target, safe='')}", host="localhost")
    with pytest.raises(ImageFetchError) as caught:
        fetch_image(start, policy)
    message = str(caught.value)
    assert message.startswith(f"image: cannot fetch {server.url('/img.png')} (redirected from ")
    assert f"http://localhost:{server.port}/redirect)" in message
    assert "127.0.0.1 is a loopback address" in message
    assert "abc" not in message
    assert server.paths == ["/redirect"]
    assert connect_guard == []


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.0.0.1/face.png", "private"),
        ("ftp://localhost/face.png", "not ftp:"),
        ("file:///etc/passwd", "not file:"),
        ("http://user:pw@localhost/face.png", "user name or password"),
    ],
)
def test_redirects_are_rechecked(
    server: Server, connect_guard: list[object], to: str, expected: str
) -> None:
    policy = FetchPolicy(allowed_hosts=frozenset({"localhost"}))
    start = server.url(f"/redirect?to={urllib.parse.quote(to, safe='')}", host="localhost")
    with pytest.raises(ImageFetchError, match=expected):
        fetch_image(start, policy)
    assert server.paths == ["/redirect"]
    assert connect_guard == []


def test_a_redirect_without_location(server: Server) -> None:
    with pytest.raises(ImageFetchError, match=r"redirected \(HTTP 302\) without saying where"):
        fetch_image(server.url("/no-location"), LOCAL)


@pytest.mark.parametrize(("status", "phrase"), [(404, "Not Found"), (500, "Internal Server Error")])
def test_an_error_status_is_named(server: Server, status: int, phrase: str) -> None:
    with pytest.raises(ImageFetchError) as caught:
        fetch_image(server.url(f"/status/{status}?a=b"), LOCAL)
    assert str(caught.value) == (
        f"image: cannot fetch {server.url(f'/status/{status}')}: "
        f"the server answered HTTP {status} {phrase}"
    )
    assert caught.value.status == status


def test_a_not_modified_answer_is_an_error(server: Server) -> None:
    with pytest.raises(ImageFetchError, match="HTTP 304"):
        fetch_image(server.url("/status/304"), LOCAL)


# --------------------------------------------------------------------------------------------
# Size limits and timeouts


def test_a_declared_length_over_the_limit_is_refused_up_front(server: Server) -> None:
    started = time.monotonic()
    with pytest.raises(ImageFetchError) as caught:
        fetch_image(server.url("/big-declared"), LOCAL)
    assert time.monotonic() - started < 2  # did not wait for a body that never comes
    assert str(caught.value) == (
        f"image: cannot fetch {server.url('/big-declared')}: "
        "the server says the file is 25.1 MB; the limit is 25 MB"
    )


def test_a_streamed_body_over_the_limit_is_cut_off(server: Server) -> None:
    policy = FetchPolicy(allow_private=True, max_bytes=10_000)
    with pytest.raises(ImageFetchError) as caught:
        fetch_image(server.url("/big-stream"), policy)
    assert "the file is over the limit of 10,000 bytes" in str(caught.value)


@pytest.mark.parametrize("path", ["/img.png", "/img-chunked.png"])
def test_the_limit_is_inclusive(server: Server, path: str) -> None:
    exact = FetchPolicy(allow_private=True, max_bytes=len(PNG))
    assert fetch_image(server.url(path), exact) == PNG
    short = FetchPolicy(allow_private=True, max_bytes=len(PNG) - 1)
    with pytest.raises(ImageFetchError, match=r"limit is|over the limit"):
        fetch_image(server.url(path), short)


def test_a_server_that_never_answers_times_out(server: Server) -> None:
    started = time.monotonic()
    with pytest.raises(ImageFetchError, match=r"within 0\.5 seconds \(timed out\)"):
        fetch_image(server.url("/slow-headers"), FetchPolicy(allow_private=True, timeout=0.5))
    assert time.monotonic() - started < 2


def test_a_trickling_server_hits_the_overall_deadline(server: Server) -> None:
    # A byte every 50 ms never trips a per-read timeout; the overall deadline still holds.
    started = time.monotonic()
    with pytest.raises(ImageFetchError, match="timed out"):
        fetch_image(server.url("/trickle"), FetchPolicy(allow_private=True, timeout=0.8))
    assert time.monotonic() - started < 1.6


def test_a_stall_after_slow_headers_ends_at_the_deadline(server: Server) -> None:
    # Headers come at 0.6 s, then the body stalls: the fetch still ends at about 1 s, not at
    # 0.6 s plus a full read timeout.
    started = time.monotonic()
    with pytest.raises(ImageFetchError, match="timed out"):
        fetch_image(
            server.url("/stall-mid-body?delay=0.6"), FetchPolicy(allow_private=True, timeout=1.0)
        )
    assert time.monotonic() - started < 1.5


def test_a_closed_port_is_a_connect_error(server: Server) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ImageFetchError, match=r"cannot connect to 127\.0\.0\.1"):
        fetch_image(f"http://127.0.0.1:{port}/img.png", LOCAL)


# --------------------------------------------------------------------------------------------
# The content must be an image


def test_html_is_not_an_image(server: Server) -> None:
    with pytest.raises(UnsupportedImageError) as caught:
        fetch_image(server.url("/page.html?x=1"), LOCAL)
    message = str(caught.value)
    assert server.url("/page.html") in message
    assert "not an image" in message and "text/html" in message
    assert "x=1" not in message


def test_a_truncated_png_is_corrupt(server: Server) -> None:
    with pytest.raises(CorruptImageError, match=r"/truncated\.png"):
        fetch_image(server.url("/truncated.png"), LOCAL)


# --------------------------------------------------------------------------------------------
# HTTPS: the connection is pinned, the name still drives SNI and certificate checks


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[Server, list[str | None]]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "1", "-subj", "/CN=images.example.test",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    names: list[str | None] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _sock, name, _ctx: names.append(name)
    http = _HTTPServer(("127.0.0.1", 0), _Handler)
    http.socket = context.wrap_socket(http.socket, server_side=True, do_handshake_on_connect=False)
    record = _start(http)
    try:
        yield record, names
    finally:
        record.stop.set()
        http.shutdown()
        http.server_close()


def test_https_sends_the_host_name_as_sni_and_checks_the_certificate(
    tls_server: tuple[Server, list[str | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, names = tls_server
    _resolve_to(monkeypatch, "images.example.test", "127.0.0.1")
    policy = FetchPolicy(allowed_hosts=frozenset({"images.example.test"}), timeout=3)
    with pytest.raises(ImageFetchError) as caught:
        fetch_image(f"https://images.example.test:{server.port}/img.png", policy)
    # The self-signed certificate is (rightly) not trusted, and the server saw the real name.
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert str(caught.value).startswith(
        f"image: cannot fetch https://images.example.test:{server.port}/img.png: "
    )
    assert names == ["images.example.test"]
    assert server.requests == []


# --------------------------------------------------------------------------------------------
# data: URIs


def _data_uri(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def test_a_data_uri_is_decoded(connect_guard: list[object]) -> None:
    assert fetch_image(_data_uri(PNG)) == PNG
    assert decode_data_uri(_data_uri(PNG), MAX_FILE_BYTES) == PNG
    assert connect_guard == []


def test_data_uri_variants() -> None:
    encoded = base64.b64encode(PNG).decode()
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    assert decode_data_uri(f"DATA:image/png;base64,{wrapped}", 10**6) == PNG
    unpadded = base64.urlsafe_b64encode(PNG).decode().rstrip("=")
    assert decode_data_uri(f"data:;base64,{unpadded}", 10**6) == PNG
    percent = urllib.parse.quote(encoded, safe="")
    assert decode_data_uri(f"data:image/png;base64,{percent}", 10**6) == PNG
    raw = urllib.parse.quote_from_bytes(PNG)
    assert decode_data_uri(f"data:image/png,{raw}", 10**6) == PNG


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("data:image/png;base64,iVBOR*w0K", "is not valid base64"),
        ("data:image/png;base64,ééé", "is not valid base64"),
        ("data:image/png;base64", "has no comma"),
        ("data:image/png;base64,", "holds no data"),
        ("data:text/html;base64,PGI+aGk8L2I+", "says its content is text/html, not an image"),
    ],
)
def test_bad_data_uris(uri: str, expected: str) -> None:
    with pytest.raises(ImageFetchError, match=expected) as caught:
        fetch_image(uri)
    assert str(caught.value).startswith("image: the data URI data:")


def test_a_data_uri_over_the_limit_is_refused_before_decoding() -> None:
    uri = _data_uri(b"\0" * 3000)
    with pytest.raises(ImageFetchError, match=r"holds about 3,000 bytes; the limit is 1,000 bytes"):
        decode_data_uri(uri, 1000)
    with pytest.raises(ImageFetchError, match="limit is 1,000 bytes"):
        fetch_image(uri, FetchPolicy(max_bytes=1000))
    huge = "data:image/png;base64," + "A" * (MAX_FILE_BYTES // 3 * 4 + 8)
    with pytest.raises(ImageFetchError, match="the limit is 25 MB"):
        fetch_image(huge)


def test_a_data_uri_that_is_not_an_image() -> None:
    with pytest.raises(UnsupportedImageError, match="the data URI data:image/png;base64,…"):
        fetch_image(_data_uri(b"just text"))


# --------------------------------------------------------------------------------------------
# Pieces


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(address) is None


def test_redact_url() -> None:
    assert redact_url("https://u:p@h.test:8443/a/b.png?sig=x#frag") == "https://h.test:8443/a/b.png"
    assert len(redact_url("http://h.test/" + "a" * 1000)) == 200


def test_policy_validation_and_normalisation() -> None:
    policy = FetchPolicy(allowed_hosts={"CDN.Example.Test.", "[::1]"})  # type: ignore[arg-type]
    assert policy.allowed_hosts == frozenset({"cdn.example.test", "::1"})
    assert policy.allows_host("cdn.example.test.")
    assert FetchPolicy(allowed_hosts=frozenset({"bücher.test"})).allows_host("xn--bcher-kva.test")
    for bad in ({"max_bytes": 0}, {"timeout": 0}, {"max_redirects": -1}):
        with pytest.raises(ValueError):
            FetchPolicy(**bad)  # type: ignore[arg-type]
