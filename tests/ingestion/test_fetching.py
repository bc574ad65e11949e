"""Tests for ingestion.fetching: the total deadline, refused addresses, DNS rebinding, TLS to a
pinned address, redirects, and the upload-time refusal in the web view and the API.

Nothing connects beyond loopback: resolution of made-up names is a patched getaddrinfo, and
"public" test hosts are local servers on 127.0.0.2 that the address check is told to allow.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ingestion import fetching
from ingestion.fetching import address_refusal, check_url, fetch_url
from ingestion.parsing import ParseError, ParseLimits, TransientParseError
from ingestion.parsing import fetch_url as reexported_fetch_url

PUBLIC_STANDIN = "127.0.0.2"  # plays a public address in the rebinding and TLS tests


@pytest.fixture(autouse=True)
def _no_local_escape_hatch(monkeypatch):
    monkeypatch.delenv("RAG_ALLOW_LOCAL_URLS", raising=False)


class _Handler(BaseHTTPRequestHandler):
    hits: list[tuple[str, str, str]]  # (server address, path, Host header), set per server

    def do_GET(self):  # noqa: N802
        self.hits.append((self.server.server_address[0], self.path, self.headers.get("Host")))
        try:
            self.route()
        except OSError:
            pass  # the client hung up (e.g. at its deadline)

    def route(self):
        if self.path == "/drip":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            for _ in range(40):  # 10 s in all, one byte every 0.25 s
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.25)
        elif self.path == "/silent":
            time.sleep(3)
        elif self.path.startswith("/to/"):
            self.send_response(302)
            self.send_header("Location", self.path[len("/to/") :])
            self.end_headers()
        else:
            body = b"<html><body><p>page from " + self.server.server_address[0].encode() + b"</p>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args):
        pass


def _serve(host: str, port: int = 0, tls: ssl.SSLContext | None = None):
    hits: list = []
    handler = type("Handler", (_Handler,), {"hits": hits})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    ).start()
    return server, hits


@pytest.fixture
def servers():
    started = []

    def start(host: str, port: int = 0, tls: ssl.SSLContext | None = None):
        server, hits = _serve(host, port, tls)
        started.append(server)
        return server.server_address[1], hits

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def _pair(start):
    """A "public" server on 127.0.0.2 and an "internal" one on 127.0.0.1, same port."""
    for _ in range(20):
        port, good = start(PUBLIC_STANDIN)
        try:
            _, evil = start("127.0.0.1", port)
        except OSError:
            continue
        return port, good, evil
    pytest.skip("no port free on both 127.0.0.1 and 127.0.0.2")


@pytest.fixture
def standin_is_public(monkeypatch):
    """The address check treats 127.0.0.2 as a public address, everything else as usual."""
    real = fetching.address_refusal

    def refusal(ip, *, allow_private):
        if str(ip) == PUBLIC_STANDIN:
            return None
        return real(ip, allow_private=allow_private)

    monkeypatch.setattr(fetching, "address_refusal", refusal)


def _fake_dns(monkeypatch, answers: dict[str, list[list[str]]]):
    """getaddrinfo that answers the names in `answers` with the next list of addresses (the
    last one repeats), and counts the lookups."""
    real = socket.getaddrinfo
    lookups: dict[str, int] = {}

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002
        if host not in answers:
            return real(host, port, family, type, proto, flags)
        n = lookups.get(host, 0)
        lookups[host] = n + 1
        batch = answers[host][min(n, len(answers[host]) - 1)]
        out = []
        for ip in batch:
            if ":" in ip:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port or 0, 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port or 0)))
        return out

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


# --------------------------------------------------------------------------- address rules


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "::1",
        "0.0.0.0",
        "169.254.169.254",
        "fe80::1",
        "100.100.100.200",
        "100.64.0.1",
        "fd00:ec2::254",
        "fc00::1",
        "224.0.0.1",
        "240.0.0.1",
        "192.0.2.1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::127.0.0.1",
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    ],
)
def test_local_and_reserved_addresses_are_always_refused(ip):
    assert address_refusal(ip, allow_private=False) == "local"
    assert address_refusal(ip, allow_private=True) == "local"


@pytest.mark.parametrize(
    "ip", ["10.0.0.1", "172.16.0.1", "172.31.255.254", "192.168.1.1", "::ffff:10.0.0.1"]
)
def test_private_addresses_only_when_allowed(ip):
    assert address_refusal(ip, allow_private=False) == "private"
    assert address_refusal(ip, allow_private=True) is None


@pytest.mark.parametrize(
    "ip", ["93.184.216.34", "172.32.0.1", "2606:2800:220:1:248:1893:25c8:1946", "2002:5db8:d822::"]
)
def test_public_addresses_are_allowed(ip):
    assert address_refusal(ip, allow_private=False) is None


# --------------------------------------------------------------------------- check_url


def test_check_url_refuses_bad_urls(monkeypatch):
    _fake_dns(
        monkeypatch,
        {
            "public.test": [["93.184.216.34"]],
            "mixed.test": [["93.184.216.34", "127.0.0.1"]],
            "lan.test": [["192.168.1.10"]],
            "metadata.test": [["fd00:ec2::254"]],
        },
    )
    check_url("https://public.test/page", allow_private=False)
    for url, message in [
        ("file:///etc/passwd", "http"),
        ("ftp://public.test/", "http"),
        ("http:///nohost", "host"),
        ("http://127.0.0.1/", "local or reserved"),
        ("http://[::ffff:127.0.0.1]/", "local or reserved"),
        ("http://169.254.169.254/latest/meta-data/", "local or reserved"),
        ("http://mixed.test/", "local or reserved"),  # one bad address is enough
        ("http://metadata.test/", "local or reserved"),
        ("http://lan.test/", "private network"),
        ("http://localhost/", "local or reserved"),
    ]:
        with pytest.raises(ParseError, match=message):
            check_url(url, allow_private=False)
    check_url("http://lan.test/", allow_private=True)


def test_check_url_unresolvable_host(monkeypatch):
    def no_such_host(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    with pytest.raises(ParseError, match="could not resolve host nowhere.test"):
        check_url("http://nowhere.test/", allow_private=False)
    check_url("http://nowhere.test/", allow_private=False, require_resolvable=False)


def test_check_url_escape_hatch_for_tests(monkeypatch):
    monkeypatch.setenv("RAG_ALLOW_LOCAL_URLS", "1")
    check_url("http://127.0.0.1:9/", allow_private=False)
    with pytest.raises(ParseError, match="http"):
        check_url("file:///etc/passwd", allow_private=False)


# --------------------------------------------------------------------------- fetch_url


def test_fetch_url_is_still_importable_from_parsing():
    assert reexported_fetch_url is fetch_url


@pytest.mark.slow  # waits out its deadline: about 1 s
def test_slow_drip_server_is_cut_off_at_the_deadline(servers, standin_is_public):
    port, _hits = servers(PUBLIC_STANDIN)
    started = time.monotonic()
    with pytest.raises(ParseError, match="took longer than 1 s"):
        fetch_url(f"http://{PUBLIC_STANDIN}:{port}/drip", limits=ParseLimits(url_timeout=1))
    assert time.monotonic() - started < 1.8


def test_silent_server_times_out_as_transient(servers, standin_is_public):
    port, _hits = servers(PUBLIC_STANDIN)
    started = time.monotonic()
    with pytest.raises(TransientParseError, match="timed out after 0.5 s"):
        fetch_url(f"http://{PUBLIC_STANDIN}:{port}/silent", limits=ParseLimits(url_timeout=0.5))
    assert time.monotonic() - started < 1.3


def test_deadline_covers_slow_name_resolution(monkeypatch):
    def slow_dns(*args, **kwargs):
        time.sleep(3)
        raise socket.gaierror(socket.EAI_NONAME, "too late")

    monkeypatch.setattr(socket, "getaddrinfo", slow_dns)
    started = time.monotonic()
    with pytest.raises(TransientParseError, match="timed out"):
        fetch_url("http://slow-dns.test/", limits=ParseLimits(url_timeout=0.5))
    assert time.monotonic() - started < 1.3


def test_rebinding_dns_cannot_redirect_the_connection(servers, standin_is_public, monkeypatch):
    port, good, evil = _pair(servers)
    # First answer: the "public" address (checked); every later one: 127.0.0.1.
    lookups = _fake_dns(monkeypatch, {"rebind.test": [[PUBLIC_STANDIN], ["127.0.0.1"]]})
    content, name, mime = fetch_url(f"http://rebind.test:{port}/page.html")
    assert content.endswith(b"page from 127.0.0.2</p>") and mime == "text/html"
    assert name == "page.html"
    assert lookups["rebind.test"] == 1  # resolved once; the connection used that answer
    assert good == [(PUBLIC_STANDIN, "/page.html", f"rebind.test:{port}")]
    assert evil == []


def test_host_with_any_refused_address_is_not_fetched(servers, standin_is_public, monkeypatch):
    port, good, evil = _pair(servers)
    _fake_dns(monkeypatch, {"mixed.test": [[PUBLIC_STANDIN, "127.0.0.1"]]})
    with pytest.raises(ParseError, match="refusing to fetch mixed.test"):
        fetch_url(f"http://mixed.test:{port}/")
    assert good == [] and evil == []


def test_each_redirect_hop_is_checked_and_pinned(servers, standin_is_public, monkeypatch):
    port, good, evil = _pair(servers)
    _fake_dns(monkeypatch, {"rebind.test": [[PUBLIC_STANDIN], ["127.0.0.1"]]})
    # The redirect goes back to the same name, whose second answer is 127.0.0.1: refused.
    with pytest.raises(ParseError, match="local or reserved"):
        fetch_url(f"http://rebind.test:{port}/to/http://rebind.test:{port}/page")
    assert [path for _ip, path, _host in good] == [f"/to/http://rebind.test:{port}/page"]
    assert evil == []


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/page",
        "http://[::1]:{port}/page",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "http://10.0.0.1/",
        "file:///etc/passwd",
    ],
)
def test_redirect_to_a_refused_target_is_refused(servers, standin_is_public, target):
    port, good, evil = _pair(servers)
    with pytest.raises(ParseError, match="local or reserved|private network|http"):
        fetch_url(f"http://{PUBLIC_STANDIN}:{port}/to/" + target.format(port=port))
    assert len(good) == 1 and evil == []


def test_redirects_are_followed_and_private_allowed_on_request(servers, monkeypatch):
    port, _hits = servers(PUBLIC_STANDIN)
    monkeypatch.setattr(
        fetching, "address_refusal", lambda ip, *, allow_private: None if allow_private else "x"
    )
    content, _name, _mime = fetch_url(
        f"http://{PUBLIC_STANDIN}:{port}/to//page.html",
        limits=ParseLimits(url_allow_private=True),
    )
    assert b"page from 127.0.0.2" in content


def test_file_and_other_schemes_are_refused():
    for url in ["file:///etc/passwd", "ftp://example.com/", "gopher://127.0.0.1:6379/_INFO"]:
        with pytest.raises(ParseError, match="only http:// and https://"):
            fetch_url(url)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """Self-signed certificates for rebind.test and for other.test (openssl CLI)."""
    folder = tmp_path_factory.mktemp("tls")
    made = {}
    for name in ("rebind.test", "other.test"):
        cert, key = folder / f"{name}.pem", folder / f"{name}.key"
        args = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        args += ["-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}"]
        args += ["-keyout", str(key), "-out", str(cert)]
        try:
            subprocess.run(args, check=True, capture_output=True, timeout=60)
        except (OSError, subprocess.CalledProcessError):
            pytest.skip("openssl is not available")
        made[name] = (cert, key)
    return made


def _tls_server(servers, cert, key):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    seen_sni: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: seen_sni.append(name)
    port, hits = servers(PUBLIC_STANDIN, tls=context)
    return port, hits, seen_sni


def test_tls_to_pinned_address_verifies_the_hostname(
    servers, standin_is_public, monkeypatch, certificates
):
    cert, key = certificates["rebind.test"]
    port, hits, seen_sni = _tls_server(servers, cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust our self-signed certificate
    _fake_dns(monkeypatch, {"rebind.test": [[PUBLIC_STANDIN], ["127.0.0.1"]]})
    content, _name, _mime = fetch_url(f"https://rebind.test:{port}/page")
    assert b"page from 127.0.0.2" in content
    assert seen_sni == ["rebind.test"]
    assert hits[0][2] == f"rebind.test:{port}"


def test_tls_certificate_for_another_name_is_refused(
    servers, standin_is_public, monkeypatch, certificates
):
    cert, key = certificates["other.test"]
    port, hits, _seen_sni = _tls_server(servers, cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    _fake_dns(monkeypatch, {"rebind.test": [[PUBLIC_STANDIN]]})
    with pytest.raises(ParseError, match="certificate"):
        fetch_url(f"https://rebind.test:{port}/page")
    assert hits == []


# --------------------------------------------------------------------------- upload refusal


@pytest.mark.django_db
def test_web_view_refuses_a_local_url(client, make_user, make_kb):
    from ingestion.models import Document

    user = make_user("ann")
    kb = make_kb(user)
    client.force_login(user)
    response = client.post(f"/kb/{kb.pk}/add-url", {"url": "http://127.0.0.1/"}, follow=True)
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    assert any("local or reserved" in m for m in shown), shown
    assert not Document.objects.filter(knowledge_base=kb).exists()


@pytest.mark.django_db
def test_api_refuses_a_local_url(client, make_user, make_kb, monkeypatch):
    from ingestion.models import Document
    from ragapp.models import ApiToken

    user = make_user("ann")
    kb = make_kb(user)
    raw = ApiToken.issue(user)[1]
    path = f"/api/v1/knowledge-bases/{kb.pk}/documents/url"
    for url in ["http://127.0.0.1/", "http://169.254.169.254/latest/meta-data/"]:
        response = client.post(
            path, {"url": url}, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {raw}"
        )
        assert response.status_code == 422
        assert "local or reserved" in response.json()["error"]["message"]
    assert not Document.objects.filter(knowledge_base=kb).exists()
    monkeypatch.setenv("RAG_ALLOW_LOCAL_URLS", "1")  # what the URL tests with a worker use
    response = client.post(
        path,
        {"url": "http://127.0.0.1/"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert response.status_code == 201
