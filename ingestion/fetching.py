"""Fetch a web page for "add a page by URL" without letting the URL reach inside our network.

Plain Python (no Django). Entry points: `check_url` (a cheap upfront check, for the upload
views) and `fetch_url` (the worker's download).

Rules:
- Only http:// and https://; at most 5 redirects, each hop checked like the first URL.
- Every host is resolved once and every address it resolves to is checked
  (`address_refusal`); one refused address refuses the host. The connection then goes to a
  checked address: `_PinnedBackend` dials only pinned addresses and never looks a name up
  itself, so a DNS answer that changes between the check and the connect (DNS rebinding)
  cannot steer the request to 127.0.0.1. Only the dial is pinned: the URL is unchanged, so
  the Host header, TLS SNI and certificate verification still use the hostname.
- Refused: loopback, link-local (169.254/16, fe80::/10: cloud metadata), multicast,
  reserved, unspecified, carrier-grade NAT 100.64/10 (100.100.100.200 is a cloud metadata
  address), IPv6 unique-local fc00::/7 (fd00:ec2::254 is AWS's), the other ranges that are
  not globally routable (documentation, benchmarking), and IPv6 forms that carry a refused
  IPv4 address (::ffff:127.0.0.1, 6to4, NAT64; Teredo is refused outright). The private LAN
  ranges 10/8, 172.16/12 and 192.168/16 only with `allow_private` (RAG_URL_ALLOW_PRIVATE):
  in docker-compose the database and Redis sit on such addresses.
- One wall-clock deadline (limits.url_timeout) covers resolution, connects, TLS, redirects
  and every read, so a server that drips a byte every few seconds is cut off at the
  deadline instead of holding a worker for as long as it likes.
- RAG_ALLOW_LOCAL_URLS=1 (tests only: they serve pages from 127.0.0.1) turns the address
  refusals off; resolution and pinning stay.

Failures: ParseError (permanent, message fit for a user) or TransientParseError (retry).
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import ssl
import threading
import time
from pathlib import Path
from urllib.parse import unquote

import httpcore
import httpx

from .parsers.base import ParseError, ParseLimits, TransientParseError

__all__ = ["address_refusal", "check_url", "fetch_url"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAX_REDIRECTS = 5
_PRIVATE_LAN = (
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("172.16.0.0/12"),
    ipaddress.ip_network("192.168.0.0/16"),
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

PRIVATE = "private"
LOCAL = "local"


def address_refusal(ip: IPAddress | str, *, allow_private: bool) -> str | None:
    """Why `ip` must not be fetched from: "local" (loopback, link-local, metadata, reserved...)
    or "private" (a LAN address while private addresses are not allowed); None if allowed."""
    if isinstance(ip, str):
        ip = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.teredo is not None:
            return LOCAL  # tunnelled to an address we cannot see; no web server needs it
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:  # the socket would reach that IPv4 address
            return address_refusal(embedded, allow_private=allow_private)
    if any(ip in net for net in _PRIVATE_LAN):
        return None if allow_private else PRIVATE
    if (
        ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or ip in _CGNAT
        or ip in _UNIQUE_LOCAL
        or not ip.is_global
    ):
        return LOCAL
    return None


def _local_allowed() -> bool:
    return os.environ.get("RAG_ALLOW_LOCAL_URLS") == "1"


def _refusal_message(host: str, reason: str) -> str:
    if reason == PRIVATE:
        return (
            f"refusing to fetch {host}: it points to a private network address "
            "(an administrator can allow these with RAG_URL_ALLOW_PRIVATE)"
        )
    return f"refusing to fetch {host}: it points to a local or reserved address"


def _target(url: str | httpx.URL) -> tuple[httpx.URL, str, int]:
    """(parsed URL, host as the connection will use it, port). Parsed by httpx, the same
    parser that makes the request, so the check and the request cannot disagree."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ParseError("invalid URL") from exc
    if parsed.scheme not in ("http", "https"):
        raise ParseError("only http:// and https:// URLs can be fetched")
    if not parsed.raw_host:
        raise ParseError("the URL has no host name")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return parsed, parsed.raw_host.decode("ascii"), port


_Address = tuple[int, tuple]  # (socket family, sockaddr)


class _ResolveTimeout(Exception):
    pass


def _resolve(host: str, port: int, *, timeout: float) -> list[_Address]:
    """Every address of `host`, looked up once. getaddrinfo has no timeout of its own, so it
    runs in a daemon thread that is abandoned when the deadline comes first."""
    if timeout <= 0:
        raise _ResolveTimeout
    box: dict = {}

    def lookup() -> None:
        try:
            box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            box["error"] = exc

    worker = threading.Thread(target=lookup, name="url-resolve", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise _ResolveTimeout
    error = box.get("error")
    if isinstance(error, socket.gaierror) and error.errno == socket.EAI_AGAIN:
        raise TransientParseError(f"could not resolve host {host} (temporary DNS failure)")
    if error is not None:
        raise ParseError(f"could not resolve host {host}")
    addresses: list[_Address] = []
    for family, _type, _proto, _name, sockaddr in box["infos"]:
        if family in (socket.AF_INET, socket.AF_INET6) and (family, sockaddr) not in addresses:
            addresses.append((family, sockaddr))
    if not addresses:
        raise ParseError(f"could not resolve host {host}")
    return addresses


def _check_addresses(host: str, addresses: list[_Address], *, allow_private: bool) -> None:
    if _local_allowed():
        return
    for _family, sockaddr in addresses:
        reason = address_refusal(sockaddr[0], allow_private=allow_private)
        if reason:
            raise ParseError(_refusal_message(host, reason))


def check_url(
    url: str,
    *,
    allow_private: bool,
    timeout: float = 5.0,
    require_resolvable: bool = True,
) -> None:
    """Refuse, with a ParseError fit for a user, a URL that fetch_url would certainly refuse:
    a scheme other than http(s), no host, a host that does not resolve (unless
    `require_resolvable` is False) or one that resolves to a refused address."""
    parsed, host, port = _target(url)
    try:
        addresses = _resolve(host, port, timeout=timeout)
    except (ParseError, TransientParseError, _ResolveTimeout) as exc:
        if require_resolvable:
            raise ParseError(f"could not resolve host {parsed.host}") from exc
        return
    _check_addresses(parsed.host, addresses, allow_private=allow_private)


# --------------------------------------------------------------------------- transport


class _PinnedBackend(httpcore.NetworkBackend):
    """Dials only the addresses fetch_url checked for a host, and enforces the deadline on
    every connect, TLS handshake, read and write."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.pins: dict[str, list[_Address]] = {}
        self.received = 0  # bytes read in the current hop: tells a slow server from a dead one

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def budget(self, timeout: float | None, error: type[Exception]) -> float:
        left = self.remaining()
        if left <= 0:
            raise error("deadline reached")
        return left if timeout is None else min(timeout, left)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options=None,
    ) -> httpcore.NetworkStream:
        addresses = self.pins.get(host)
        if not addresses:  # never resolve here: that second lookup is what rebinding abuses
            raise ParseError(f"refusing to fetch {host}: its address was not checked")
        failure: Exception | None = None
        for family, sockaddr in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.budget(timeout, httpcore.ConnectTimeout))
                sock.connect((sockaddr[0], port, *sockaddr[2:]))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for option in socket_options or ():
                    sock.setsockopt(*option)
            except OSError as exc:
                sock.close()
                failure = exc
                continue
            except BaseException:
                sock.close()
                raise
            return _DeadlineStream(sock, self)
        if isinstance(failure, TimeoutError):
            raise httpcore.ConnectTimeout(str(failure)) from failure
        raise httpcore.ConnectError(str(failure)) from failure

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise ParseError("only http:// and https:// URLs can be fetched")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _DeadlineStream(httpcore.NetworkStream):
    """httpcore's SyncStream with every timeout clipped to the fetch deadline."""

    def __init__(self, sock: socket.socket, backend: _PinnedBackend) -> None:
        self._sock = sock
        self._backend = backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            self._sock.settimeout(self._backend.budget(timeout, httpcore.ReadTimeout))
            data = self._sock.recv(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc
        self._backend.received += len(data)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            while buffer:
                self._sock.settimeout(self._backend.budget(timeout, httpcore.WriteTimeout))
                sent = self._sock.send(buffer)
                buffer = buffer[sent:]
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    def close(self) -> None:
        self._sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        # server_hostname is the URL's host (httpcore passes it), so SNI and the certificate
        # check are for the name the user gave, not for the pinned address we dialled.
        try:
            self._sock.settimeout(self._backend.budget(timeout, httpcore.ConnectTimeout))
            sock = ssl_context.wrap_socket(self._sock, server_hostname=server_hostname)
        except TimeoutError as exc:
            self.close()
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            self.close()
            raise httpcore.ConnectError(str(exc)) from exc
        return _DeadlineStream(sock, self._backend)

    def get_extra_info(self, info: str):
        if info == "ssl_object" and isinstance(self._sock, ssl.SSLSocket):
            return self._sock._sslobj  # type: ignore[attr-defined]
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "socket":
            return self._sock
        if info == "is_readable":  # a pooled connection the server has closed
            fd = self._sock.fileno()
            if fd == -1:
                return True
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(0))
        return None


class _PinnedTransport(httpx.HTTPTransport):
    """httpx's own transport (request/response mapping, error mapping) over a connection pool
    that uses _PinnedBackend. HTTPTransport has no network_backend argument, so the pool it
    built is swapped for an equivalent one; tests/ingestion/test_fetching.py checks that the
    swap still takes effect."""

    def __init__(self, backend: _PinnedBackend) -> None:
        super().__init__()
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            network_backend=backend,
            max_connections=4,
            max_keepalive_connections=2,
        )


def _connect_failure(exc: Exception) -> Exception:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return ParseError(f"the site's TLS certificate is not valid ({cause.verify_message})")
        cause = cause.__cause__ or cause.__context__
    return TransientParseError(f"could not connect: {exc.__class__.__name__}")


def _filename_for(url: str, headers, mime: str) -> str:
    import email.message

    from .parsing import SUPPORTED_EXTENSIONS  # parsing re-exports fetch_url: import late

    known = {ext for exts in SUPPORTED_EXTENSIONS.values() for ext in exts}
    cd = headers.get("content-disposition")
    if cd:
        m = email.message.Message()
        m["content-disposition"] = cd
        name = m.get_filename()
        if name:
            return Path(name).name
    parsed = httpx.URL(url)
    name = Path(unquote(parsed.path)).name
    if not name:
        name = parsed.host or "page"
    if not Path(name).suffix or Path(name).suffix.lower() not in known:
        ext = {
            "text/html": ".html",
            "application/xhtml+xml": ".html",
            "application/pdf": ".pdf",
            "text/plain": ".txt",
            "text/markdown": ".md",
            "text/csv": ".csv",
        }.get(mime)
        if ext:
            name += ext
    return name


def fetch_url(url: str, *, limits: ParseLimits | None = None) -> tuple[bytes, str, str]:
    """Download a URL: (content, filename, mime_type), following the module's rules.

    The whole fetch must finish within limits.url_timeout seconds. Running out of time after
    the server sent something (a slow drip) is a ParseError; a server that never answered,
    connection errors, 429 and 5xx are TransientParseError; other failures ParseError."""
    limits = limits or ParseLimits()
    backend = _PinnedBackend(time.monotonic() + limits.url_timeout)
    current: str | httpx.URL = url
    with httpx.Client(
        transport=_PinnedTransport(backend),
        timeout=httpx.Timeout(limits.url_timeout),
        follow_redirects=False,
        trust_env=False,  # no proxy from the environment: it would dial for us, unpinned
        headers={"User-Agent": "ragapp/1.0"},
    ) as client:
        for _ in range(_MAX_REDIRECTS + 1):
            parsed, host, port = _target(current)
            backend.received = 0
            try:
                addresses = _resolve(host, port, timeout=backend.remaining())
                _check_addresses(parsed.host, addresses, allow_private=limits.url_allow_private)
                backend.pins[host] = addresses
                with client.stream("GET", parsed) as resp:
                    if resp.is_redirect:
                        location = resp.headers.get("location")
                        if not location:
                            raise ParseError(
                                f"URL redirected without a location (HTTP {resp.status_code})"
                            )
                        current = resp.url.join(location)
                        continue
                    return _read_body(resp, limits)
            except (httpx.TimeoutException, _ResolveTimeout) as exc:
                if backend.received:
                    raise ParseError(
                        f"fetching the URL took longer than {limits.url_timeout:g} s"
                    ) from exc
                raise TransientParseError(
                    f"fetching the URL timed out after {limits.url_timeout:g} s"
                ) from exc
            except httpx.TransportError as exc:
                raise _connect_failure(exc) from exc
            except httpx.InvalidURL as exc:
                raise ParseError("invalid URL") from exc
    raise ParseError("too many redirects")


def _read_body(resp: httpx.Response, limits: ParseLimits) -> tuple[bytes, str, str]:
    if resp.status_code == 429 or resp.status_code >= 500:
        raise TransientParseError(f"server answered HTTP {resp.status_code}; try again later")
    if resp.status_code >= 400:
        raise ParseError(f"URL could not be fetched (HTTP {resp.status_code})")
    declared = resp.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.url_max_bytes:
        raise ParseError(
            f"page is too large ({int(declared) / 2**20:.1f} MB; the limit is "
            f"{limits.url_max_bytes / 2**20:.0f} MB)"
        )
    chunks: list[bytes] = []
    total = 0
    for chunk in resp.iter_bytes():
        total += len(chunk)
        if total > limits.url_max_bytes:
            raise ParseError(f"page is too large (more than {limits.url_max_bytes / 2**20:.0f} MB)")
        chunks.append(chunk)
    mime = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if not mime:
        mime = "application/octet-stream"
    return b"".join(chunks), _filename_for(str(resp.url), resp.headers, mime), mime
