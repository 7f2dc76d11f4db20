"""Fetching a link a creator pasted, safely, so the studio keeps its own copy.

A link is a request our server makes on someone's behalf, so it must not become a way into
the machine's own network (SSRF): only http(s); every redirect hop is checked (3 at most);
every address a host name resolves to must be a public one, and the request goes to the
address that was checked (no second DNS answer can swap it for 127.0.0.1). One GET, at most
the size the kind of file allows, 200 with an image/* or video/* type, and TOTAL_SECONDS in
all: name lookups, connects, headers, body and every redirect share one deadline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import re
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
from django.conf import settings

MAX_REDIRECTS = 3
# The whole fetch, every hop included (the README promises it). A module constant so the
# tests can lower it and still see a trickling server cut off.
TOTAL_SECONDS = 10.0
USER_AGENT = "LastframeStudio/1.0 (link check)"


class LinkError(Exception):
    """The link cannot be used; the message is fit to show a creator beside the field."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass
class FetchedLink:
    path: Path
    content_type: str
    final_url: str
    size: int


# --- Which addresses a link may reach ------------------------------------------------------
# Python 3.11's `is_global` calls IPv4-compatible, NAT64, 6to4 and site-local addresses global
# whatever IPv4 they carry (NOTES.md), so IPv6 is judged by an allow-list: only global unicast
# (2000::/3), minus the special-purpose blocks inside it. Everything outside 2000::/3 is
# refused: unspecified ::, loopback ::1, IPv4-compatible ::a.b.c.d, SIIT ::ffff:0:a.b.c.d,
# NAT64 local-use 64:ff9b:1::/48, discard 100::/64, unique local fc00::/7, link-local
# fe80::/10, site-local fec0::/10, multicast ff00::/8.
_IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_IPV6_SPECIAL = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        # IETF protocol assignments: Teredo 2001::/32 (its client IPv4 is obfuscated, and it
        # is reached through whatever relay), benchmarking 2001:2::/48, ORCHID 2001:10::/28
        # and 2001:20::/28. None of it serves a creator's file.
        "2001::/23",
        "2001:db8::/32",  # documentation
        "2002::/16",  # 6to4: an IPv4 address reached through a relay; deprecated (RFC 7526)
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # SRv6 segment identifiers (RFC 9602), never a web server
    )
)
# NAT64's well-known prefix is the one translated form we let through, and only when the
# IPv4 it embeds would itself be allowed: on an IPv6-only server behind DNS64 this is how
# every IPv4-only site resolves, the gateway connects to exactly the embedded address (the
# last 32 bits, RFC 6052), and RFC 6052 forbids the prefix for non-global IPv4. The
# local-use prefix 64:ff9b:1::/48 is refused: its operator chooses where the IPv4 sits.
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")


def address_allowed(address: str) -> bool:
    """Only globally routable addresses: no loopback, private, link-local, shared (CGNAT),
    multicast, reserved or unspecified ones, and no IPv6 form that carries an IPv4 address
    the studio would refuse."""
    if settings.STUDIO_ALLOW_PRIVATE_URLS:
        return True
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        return _ipv4_allowed(ip)
    if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is the IPv4 socket itself
        return _ipv4_allowed(ip.ipv4_mapped)
    if ip in _NAT64_WELL_KNOWN:
        return _ipv4_allowed(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return (
        ip in _IPV6_GLOBAL_UNICAST
        and not any(ip in net for net in _IPV6_SPECIAL)
        and ip.is_global
        and not ip.is_multicast
    )


def _ipv4_allowed(ip: ipaddress.IPv4Address) -> bool:
    # 3.11 calls multicast (224.0.0.0/4) global.
    return ip.is_global and not ip.is_multicast


# --- One hop ---------------------------------------------------------------------------------


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise LinkError("That link's address could not be found. Check it and try again.")
    return list(dict.fromkeys(info[4][0] for info in infos))


# A DNS name as it goes on the wire (after IDNA): letters, digits, hyphens, and the
# underscores some real hosts carry. Anything else (a space, a bracket) is not a host.
_DNS_NAME = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*\.?$")
NOT_A_LINK = "That does not look like a complete link."


def _split(url: str):
    """urlsplit, with the ValueErrors of a broken link (`http://[::1`) as a plain message."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise LinkError(NOT_A_LINK)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise LinkError("That link has an invalid port.")
    return parts, port


def _wire_host(parts) -> str:
    """The host in ASCII: an IP literal or an IDNA-encoded DNS name, else LinkError. Checked
    here because getaddrinfo, httpx and the Host header each read a bad host differently."""
    host = parts.hostname
    if not host:
        raise LinkError(NOT_A_LINK)
    if parts.netloc.rsplit("@", 1)[-1].startswith("["):
        try:  # urlsplit lets IPvFuture ("[v1.x]") through, which getaddrinfo would look up
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            raise LinkError(NOT_A_LINK)
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise LinkError(NOT_A_LINK)
    if not _DNS_NAME.match(ascii_host):
        raise LinkError(NOT_A_LINK)
    return ascii_host


async def _checked_target(url: str) -> tuple[str, str, str]:
    """(URL to request with the checked IP in it, Host header, TLS server name)."""
    parts, port = _split(url)
    if parts.scheme not in ("http", "https"):
        raise LinkError("Only http:// and https:// links can be used.")
    if parts.username or parts.password:
        raise LinkError("Links with a user name or password in them cannot be used.")
    host = _wire_host(parts)
    default_port = 443 if parts.scheme == "https" else 80
    # In the executor, so the deadline also bounds a slow name server.
    loop = asyncio.get_running_loop()
    addresses = await loop.run_in_executor(None, resolve, host, port or default_port)
    if not addresses or not all(address_allowed(a) for a in addresses):
        raise LinkError(
            "That link points to a private or local network address, which the studio does not fetch."
        )
    address = addresses[0]
    netloc_ip = f"[{address}]" if ":" in address else address
    host_header = f"[{host}]" if ":" in host else host
    if port is not None and port != default_port:
        netloc_ip += f":{port}"
        host_header += f":{port}"
    pinned = urlunsplit((parts.scheme, netloc_ip, parts.path or "/", parts.query, ""))
    return pinned, host_header, host


# --- The fetch -------------------------------------------------------------------------------


def _seconds(n: float) -> str:
    return "1 second" if n == 1 else f"{n:g} seconds"


def fetch_link(url: str, kinds: tuple[str, ...], max_bytes: int) -> FetchedLink:
    """GET `url` (checked hop by hop) into a temporary file, all within TOTAL_SECONDS.
    `kinds` are the allowed media types ("image", "video"). The caller owns (and deletes)
    the returned file. For synchronous callers (views, tasks): it runs its own event loop.

    httpx's Timeout bounds each read, not the request (NOTES.md), so a server trickling a
    byte at a time could hold a worker for minutes; under asyncio.timeout the deadline
    cancels whatever the fetch is waiting on and the connection is closed."""
    url = (url or "").strip()
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_fetch(url, kinds, max_bytes)
    # This thread already runs an event loop (an ASGI server, a test driving a browser):
    # a second loop cannot run here, so the fetch gets a thread of its own.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="link") as pool:
        return pool.submit(_run_fetch, url, kinds, max_bytes).result()


def _run_fetch(url: str, kinds: tuple[str, ...], max_bytes: int) -> FetchedLink:
    # Not asyncio.run: it waits for the executor's threads, so a name lookup that hangs
    # would outlive the deadline. close() lets that thread finish on its own.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_fetch_within_deadline(url, kinds, max_bytes))
    finally:
        loop.close()


async def _fetch_within_deadline(url: str, kinds: tuple[str, ...], max_bytes: int) -> FetchedLink:
    too_slow = LinkError(
        f"The link did not send its file within {_seconds(TOTAL_SECONDS)}. "
        "Try another link, or download the file and upload it."
    )
    try:
        async with asyncio.timeout(TOTAL_SECONDS):
            return await _fetch(url, kinds, max_bytes)
    except (TimeoutError, httpx.TimeoutException):
        raise too_slow from None


async def _fetch(url: str, kinds: tuple[str, ...], max_bytes: int) -> FetchedLink:
    # The transport, not a Client: a Client parses every Location itself and raises
    # InvalidURL (a 500) on `data:` or `mailto:`; here each hop's Location is ours to check.
    timeout = httpx.Timeout(TOTAL_SECONDS).as_dict()
    async with httpx.AsyncHTTPTransport() as transport:
        for _hop in range(MAX_REDIRECTS + 1):
            pinned, host_header, server_name = await _checked_target(url)
            try:
                request = httpx.Request(
                    "GET",
                    pinned,
                    headers={
                        "Host": host_header,
                        "User-Agent": USER_AGENT,
                        "Accept": "image/*,video/*",
                        "Accept-Encoding": "identity",  # media is compressed already
                    },
                    extensions={"sni_hostname": server_name, "timeout": timeout},
                )
            except (httpx.InvalidURL, ValueError):
                raise LinkError(NOT_A_LINK)
            try:
                response = await transport.handle_async_request(request)
            except httpx.TimeoutException:
                raise
            except httpx.HTTPError:
                raise LinkError("The link could not be reached.")
            try:
                if response.is_redirect and response.headers.get("Location"):
                    url = _redirect_target(url, response.headers["Location"])
                    continue
                if response.status_code != 200:
                    raise LinkError(f"The link answered with an error ({response.status_code}), not a file.")
                content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if content_type.split("/")[0] not in kinds:
                    wanted = " or ".join("an image" if k == "image" else "a video" for k in kinds)
                    raise LinkError(
                        f"The link does not point to {wanted} (it is “{content_type or 'unknown'}”)."
                    )
                declared = response.headers.get("Content-Length")
                if declared and declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
                    raise LinkError(f"The file at the link is larger than {max_bytes / 1024 / 1024:g} MB.")
                return await _save(response, url, content_type, max_bytes)
            finally:
                await response.aclose()
    raise LinkError(f"The link redirects more than {MAX_REDIRECTS} times.")


def _redirect_target(url: str, location: str) -> str:
    """The next hop's URL, or a plain LinkError for a redirect the studio will not follow."""
    try:
        target = urljoin(url, location.strip())
    except ValueError:
        raise LinkError("The link redirects to an address that is not a complete link.")
    scheme = target.split(":", 1)[0].lower() if ":" in target else ""
    if scheme not in ("http", "https"):
        shown = f"“{scheme}:”" if scheme.isascii() and scheme.isalnum() else "another kind of address"
        raise LinkError(f"The link redirects to {shown}, and only http:// and https:// links can be used.")
    return target


async def _save(response: httpx.Response, url: str, content_type: str, max_bytes: int) -> FetchedLink:
    handle = tempfile.NamedTemporaryFile(prefix="link-", delete=False)
    path = Path(handle.name)
    size = 0
    try:
        with handle:
            async for chunk in response.aiter_bytes(64 * 1024):  # decoded, so max_bytes bounds what is kept
                size += len(chunk)
                if size > max_bytes:
                    raise LinkError(f"The file at the link is larger than {max_bytes / 1024 / 1024:g} MB.")
                handle.write(chunk)
    except httpx.TimeoutException:
        path.unlink(missing_ok=True)
        raise
    except httpx.HTTPError:
        path.unlink(missing_ok=True)
        raise LinkError("The link stopped sending its file part-way.")
    except BaseException:  # the deadline's cancellation included: no half file left behind
        path.unlink(missing_ok=True)
        raise
    return FetchedLink(path=path, content_type=content_type, final_url=url, size=size)
