"""Pasted links: fetched once, safely (no private addresses, every redirect hop checked),
and only when they answer 200 with an image or a video."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from studio import links, media
from studio.providers.simulator import frame_size, render

from .images import png_bytes


class Files(BaseHTTPRequestHandler):
    """Serves `routes`: path -> (status, headers, body), or a function that answers itself."""

    routes: dict = {}
    hits: list = []
    disable_nagle_algorithm = True  # else each answer waits ~40 ms (NOTES.md)

    def do_GET(self):
        self.hits.append(self.path)
        route = self.routes.get(self.path, (404, {"Content-Type": "text/plain"}, b"nope"))
        if callable(route):
            return route(self)
        status, headers, body = route
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Files.routes, Files.hits = {}, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def loopback_allowed(monkeypatch):
    """Let the test server on 127.0.0.1 count as public, and nothing else: a redirect to
    10.0.0.1 must still be refused before any connection is made."""
    real = links.address_allowed
    monkeypatch.setattr(links, "address_allowed", lambda a: a == "127.0.0.1" or real(a))


IMAGE = (200, {"Content-Type": "image/png"}, png_bytes())


def test_a_link_to_loopback_is_refused_without_a_request(server):
    httpd, base = server
    Files.routes["/a.png"] = IMAGE
    with pytest.raises(links.LinkError, match="private or local"):
        links.fetch_link(f"{base}/a.png", ("image",), 10**6)
    assert Files.hits == []


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/x.png",
        "http://192.168.1.10/x.png",
        "http://172.16.5.4/x.png",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x.png",
        "http://[fe80::1]/x.png",
        "http://[::ffff:127.0.0.1]/x.png",
        "http://100.64.0.1/x.png",
        "http://0.0.0.0/x.png",
        "http://localhost/x.png",
        "http://224.0.0.1/x.png",
    ],
)
def test_private_link_local_and_internal_addresses_are_refused(url):
    with pytest.raises(links.LinkError, match="private or local"):
        links.fetch_link(url, ("image",), 10**6)


@pytest.mark.parametrize(
    "url,message",
    [
        ("ftp://example.com/x.png", "Only http"),
        ("file:///etc/passwd", "Only http"),
        ("javascript:alert(1)", "Only http"),
        ("http://user:pw@example.com/x.png", "user name or password"),
        ("http:///x.png", "complete link"),
    ],
)
def test_malformed_links_get_a_plain_message(url, message):
    with pytest.raises(links.LinkError, match=message):
        links.fetch_link(url, ("image",), 10**6)


def test_a_host_that_does_not_resolve_gets_a_plain_message(monkeypatch):
    import socket

    def no_answer(*args, **kwargs):  # no DNS query leaves the machine in tests
        raise socket.gaierror("Name or service not known")

    monkeypatch.setattr(links.socket, "getaddrinfo", no_answer)
    with pytest.raises(links.LinkError, match="could not be found"):
        links.fetch_link("https://no-such-host.example/x.png", ("image",), 10**6)


def test_a_redirect_that_lands_on_a_private_address_is_refused(server, loopback_allowed):
    httpd, base = server
    Files.routes["/start.png"] = (302, {"Location": "http://10.0.0.1/internal.png"}, b"")
    with pytest.raises(links.LinkError, match="private or local"):
        links.fetch_link(f"{base}/start.png", ("image",), 10**6)
    assert Files.hits == ["/start.png"]


def test_redirects_are_followed_three_times_at_most(server, loopback_allowed):
    httpd, base = server
    for n in range(4):
        Files.routes[f"/r{n}"] = (302, {"Location": f"/r{n + 1}"}, b"")
    Files.routes["/r4"] = IMAGE
    with pytest.raises(links.LinkError, match="more than 3"):
        links.fetch_link(f"{base}/r0", ("image",), 10**6)
    Files.routes["/r1"] = (302, {"Location": "/r4"}, b"")
    fetched = links.fetch_link(f"{base}/r0", ("image",), 10**6)
    assert fetched.path.read_bytes() == IMAGE[2] and fetched.final_url.endswith("/r4")
    fetched.path.unlink()


def test_a_good_image_link_is_copied(server, loopback_allowed):
    httpd, base = server
    Files.routes["/ok.png"] = IMAGE
    fetched = links.fetch_link(f"{base}/ok.png", ("image",), 10**6)
    assert fetched.content_type == "image/png" and fetched.size == len(IMAGE[2])
    assert media.check_image(fetched.path.read_bytes()).extension == "png"
    fetched.path.unlink()


@pytest.mark.parametrize(
    "route,message",
    [
        ((404, {"Content-Type": "text/html"}, b"<h1>gone</h1>"), "error \\(404\\)"),
        ((200, {"Content-Type": "text/html"}, b"<html>login page</html>"), "does not point to an image"),
        ((200, {"Content-Type": "image/png"}, b"x" * 5000), "larger than"),
    ],
)
def test_links_that_are_not_the_file_are_refused(server, loopback_allowed, route, message):
    httpd, base = server
    Files.routes["/f"] = route
    with pytest.raises(links.LinkError, match=message):
        links.fetch_link(f"{base}/f", ("image",), 1000)


def test_allow_private_urls_setting_lets_local_links_through(server, settings):
    httpd, base = server
    settings.STUDIO_ALLOW_PRIVATE_URLS = True
    Files.routes["/ok.png"] = IMAGE
    links.fetch_link(f"{base}/ok.png", ("image",), 10**6).path.unlink()


def test_check_video_accepts_mp4_and_reports_duration(tmp_path):
    path = tmp_path / "clip.mp4"
    render(path, "A video to extend", "16:9", 1, None)
    info = media.check_video(path)
    assert info.duration == pytest.approx(1.0, abs=0.05) and (info.width, info.height) == frame_size("16:9")


def test_check_video_refuses_other_files_and_big_ones(tmp_path, settings):
    not_video = tmp_path / "x.mp4"
    not_video.write_bytes(png_bytes())
    with pytest.raises(media.MediaError):
        media.check_video(not_video)
    path = tmp_path / "clip.mp4"
    render(path, "Too big", "1:1", 1, None)
    settings.STUDIO_MAX_VIDEO_BYTES = 100
    with pytest.raises(media.MediaError, match="larger than"):
        media.check_video(path)


# --- Which addresses count as public ---------------------------------------------------------
# Every family that embeds, translates or sits beside an IPv4 address, each with an example
# pointing at loopback or a private network and one pointing at a public address.
ADDRESSES = [
    # (family, address, allowed)
    ("IPv4 public", "8.8.8.8", True),
    ("IPv4 loopback", "127.0.0.1", False),
    ("IPv4 private", "10.1.2.3", False),
    ("IPv4 CGNAT", "100.64.0.1", False),
    ("IPv4 multicast", "239.1.2.3", False),
    ("IPv6 public", "2606:4700:4700::1111", True),
    ("IPv6 public", "2001:4860:4860::8888", True),
    ("IPv6 public with zone", "2606:4700:4700::1111%eth0", True),
    ("IPv4-mapped loopback", "::ffff:127.0.0.1", False),
    ("IPv4-mapped private", "::ffff:192.168.1.1", False),
    ("IPv4-mapped public", "::ffff:8.8.8.8", True),
    ("IPv4-compatible loopback", "::127.0.0.1", False),
    ("IPv4-compatible private", "::10.0.0.1", False),
    ("IPv4-compatible public (deprecated form)", "::8.8.8.8", False),
    ("NAT64 /96 loopback", "64:ff9b::127.0.0.1", False),
    ("NAT64 /96 private", "64:ff9b::10.0.0.1", False),
    ("NAT64 /96 metadata", "64:ff9b::169.254.169.254", False),
    ("NAT64 /96 public (how DNS64 answers)", "64:ff9b::8.8.8.8", True),
    ("NAT64 local-use /48 loopback", "64:ff9b:1::7f00:1", False),
    ("NAT64 local-use /48 public", "64:ff9b:1::808:808", False),
    ("6to4 loopback", "2002:7f00:1::1", False),
    ("6to4 private", "2002:c0a8:101::1", False),
    ("6to4 public", "2002:808:808::1", False),
    ("SIIT loopback", "::ffff:0:127.0.0.1", False),
    ("SIIT private", "::ffff:0:10.0.0.1", False),
    ("SIIT public", "::ffff:0:8.8.8.8", False),
    ("Teredo, loopback server", "2001:0:7f00:1::1", False),
    ("Teredo, public server", "2001:0:4136:e378:8000:63bf:3fff:fdd2", False),
    ("site-local", "fec0::1", False),
    ("site-local, IPv4 inside", "fec0::127.0.0.1", False),
    ("unique local", "fd00::1", False),
    ("link-local", "fe80::1", False),
    ("link-local with zone", "fe80::1%eth0", False),
    ("documentation 2001:db8::/32", "2001:db8::1", False),
    ("documentation 3fff::/20", "3fff::1", False),
    ("discard", "100::1", False),
    ("ORCHID", "2001:10::1", False),
    ("ORCHIDv2", "2001:20::1", False),
    ("benchmarking", "2001:2::1", False),
    ("SRv6 SIDs", "5f00::1", False),
    ("multicast", "ff02::1", False),
    ("multicast, global scope", "ff0e::1", False),
    ("unspecified", "::", False),
    ("loopback", "::1", False),
    ("not an address", "notanip", False),
]


@pytest.mark.parametrize("family,address,allowed", ADDRESSES, ids=[f"{f}:{a}" for f, a, _ in ADDRESSES])
def test_address_guard_judges_every_ipv6_form_by_the_ipv4_it_carries(family, address, allowed):
    assert links.address_allowed(address) is allowed


def test_a_name_that_resolves_to_a_translated_loopback_is_refused_without_a_request(server, monkeypatch):
    httpd, base = server
    monkeypatch.setattr(links, "resolve", lambda host, port: ["64:ff9b::127.0.0.1"])
    with pytest.raises(links.LinkError, match="private or local"):
        links.fetch_link("http://images.example/a.png", ("image",), 10**6)
    assert Files.hits == []


# --- Broken links and redirects get a plain message, never a 500 -----------------------------


@pytest.fixture
def no_dns(monkeypatch):
    """These links must be refused before any name is looked up."""

    def looked_up(host, port):
        raise AssertionError(f"{host} was looked up")

    monkeypatch.setattr(links, "resolve", looked_up)


@pytest.mark.parametrize(
    "url,message",
    [
        ("http://[::1", "complete link"),
        ("http://[notanip]/", "complete link"),
        ("http://[v1.example]/x.png", "complete link"),
        ("http://exa mple.com/", "complete link"),
        ("http://exa<mple.com/", "complete link"),
        ("http://a..b/", "complete link"),
        ("http://example.com:99999/x.png", "invalid port"),
        ("http://example.com:0/x.png", "invalid port"),
        ("http://example.com:-1/x.png", "invalid port"),
        ("http://example.com:٨٠/x.png", "invalid port"),
    ],
)
def test_broken_links_get_a_plain_message(no_dns, url, message):
    with pytest.raises(links.LinkError, match=message):
        links.fetch_link(url, ("image",), 10**6)


@pytest.mark.parametrize(
    "location,message",
    [
        ("data:image/png;base64,iVBORw0KGgo=", "redirects to “data:”"),
        ("javascript:alert(1)", "redirects to “javascript:”"),
        ("mailto:someone@example.com", "redirects to “mailto:”"),
        ("file:///etc/passwd", "redirects to “file:”"),
        ("ftp://example.com/x.png", "redirects to “ftp:”"),
        ("http://[::1", "redirects to an address that is not a complete link"),
        ("http://[notanip]/x.png", "redirects to an address that is not a complete link"),
    ],
)
def test_redirects_to_other_schemes_or_broken_links_get_a_plain_message(
    server, loopback_allowed, location, message
):
    httpd, base = server
    Files.routes["/start.png"] = (302, {"Location": location}, b"")
    with pytest.raises(links.LinkError, match=message):
        links.fetch_link(f"{base}/start.png", ("image",), 10**6)
    assert Files.hits == ["/start.png"]


def test_an_international_host_name_is_looked_up_in_its_ascii_form(server, monkeypatch):
    httpd, base = server
    port = httpd.server_address[1]
    looked_up = []
    monkeypatch.setattr(links, "resolve", lambda host, p: looked_up.append(host) or ["127.0.0.1"])
    monkeypatch.setattr(links, "address_allowed", lambda a: True)
    Files.routes["/a.png"] = IMAGE
    links.fetch_link(f"http://bücher.example:{port}/a.png", ("image",), 10**6).path.unlink()
    assert looked_up == ["xn--bcher-kva.example"]


# --- One deadline for the whole fetch --------------------------------------------------------
DEADLINE = 1.0
MARGIN = 0.75  # event loop start, thread hand-offs, a busy shared machine
DRIP = 0.25  # one byte this often: each read is quick, the whole never ends in time


@pytest.fixture
def short_deadline(monkeypatch):
    monkeypatch.setattr(links, "TOTAL_SECONDS", DEADLINE)


def _trickle(head: bytes, drip: bytes):
    """A route that sends `head` at once, then `drip` a byte at a time (24 bytes = 6 s, so a
    fetch without a deadline would take that long and the timing assertion would fail)."""

    def answer(handler):
        handler.close_connection = True
        try:
            handler.wfile.write(head)
            for byte in drip:
                time.sleep(DRIP)
                handler.wfile.write(bytes([byte]))
        except OSError:
            pass  # the fetch hung up: what the deadline is for

    return answer


def _timed_refusal(url: str) -> tuple[float, str]:
    started = time.monotonic()
    with pytest.raises(links.LinkError) as caught:
        links.fetch_link(url, ("image",), 10**6)
    return time.monotonic() - started, caught.value.message


def test_a_body_sent_a_byte_at_a_time_is_cut_off_at_the_deadline(server, loopback_allowed, short_deadline):
    httpd, base = server
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
    Files.routes["/slow.png"] = _trickle(head, b"x" * 24)
    elapsed, message = _timed_refusal(f"{base}/slow.png")
    assert elapsed < DEADLINE + MARGIN
    assert message.startswith("The link did not send its file within 1 second.")


def test_headers_sent_a_byte_at_a_time_are_cut_off_at_the_deadline(server, loopback_allowed, short_deadline):
    httpd, base = server
    Files.routes["/slow.png"] = _trickle(b"HTTP/1.1 200 OK\r\nX-Slow: ", b"y" * 24)
    elapsed, message = _timed_refusal(f"{base}/slow.png")
    assert elapsed < DEADLINE + MARGIN
    assert "within 1 second" in message


def test_the_deadline_covers_every_redirect_together(server, loopback_allowed, short_deadline):
    httpd, base = server

    def slow_redirect(to):
        def answer(handler):
            time.sleep(0.8)  # each hop well inside the deadline; three of them are not
            handler.send_response(302)
            handler.send_header("Location", to)
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        return answer

    Files.routes.update(
        {"/r0": slow_redirect("/r1"), "/r1": slow_redirect("/r2"), "/r2": slow_redirect("/ok")}
    )
    Files.routes["/ok"] = IMAGE
    elapsed, message = _timed_refusal(f"{base}/r0")
    assert elapsed < DEADLINE + MARGIN and "within 1 second" in message


def test_the_deadline_covers_a_slow_name_lookup(server, short_deadline, monkeypatch):
    httpd, base = server

    def slow_resolve(host, port):
        time.sleep(DEADLINE + 2)
        return ["127.0.0.1"]

    monkeypatch.setattr(links, "resolve", slow_resolve)
    elapsed, message = _timed_refusal(f"http://slow-dns.example:{httpd.server_address[1]}/a.png")
    assert elapsed < DEADLINE + MARGIN and "within 1 second" in message


def test_a_link_is_fetched_from_a_thread_that_already_runs_an_event_loop(server, settings):
    """An ASGI server (or a test driving a browser) runs a loop in the calling thread."""
    import asyncio

    httpd, base = server
    settings.STUDIO_ALLOW_PRIVATE_URLS = True
    Files.routes["/cat.png"] = (200, {"Content-Type": "image/png"}, png_bytes())

    async def from_a_running_loop():
        return links.fetch_link(f"{base}/cat.png", ("image",), 10_000)

    # A thread of its own: when the browser tests ran first, Playwright's loop already runs in
    # this one, and asyncio.run refuses to start a second loop here.
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(fetched=asyncio.run(from_a_running_loop())))
    thread.start()
    thread.join(15)
    fetched = outcome["fetched"]
    try:
        assert fetched.path.read_bytes() == png_bytes()
    finally:
        fetched.path.unlink()
