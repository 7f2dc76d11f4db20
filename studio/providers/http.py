"""What every HTTP provider does the same way: its settings, the one request function,
one connection pool per process, reading Retry-After, saving a result file with a size
cap, and tolerant readers of JSON values. A vendor module only adds its auth headers, its
error mapping and the mapping of its request and answer bodies."""

from __future__ import annotations

import contextlib
import email.utils
import os
import threading
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path

import httpx
from django.conf import settings

from .. import keys
from .base import KeyCheck, Provider, ProviderError

# A hosted model may take minutes, but one HTTP exchange should not: anything slower than
# this to connect is a network problem.
CONNECT_TIMEOUT = 10.0
# A result file larger than this is not a few-second clip: stop rather than fill the disk.
MAX_DOWNLOAD_BYTES = 2 * 1024**3

# A key being tried by "Test" on the Providers page, per thread and provider: the request
# in that thread uses it, every other thread keeps the configured key.
_trial = threading.local()


def clamped_seconds(value, default: float, low: float, high: float) -> float:
    """A seconds setting as a number kept within [low, high]; `default` when unreadable."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = default
    return min(high, max(low, seconds))


# Polling faster than a provider's documented minimum is allowed only against a server on
# this machine: a test's fake standing in for the service (never the real one).
LOOPBACK_FLOOR = 0.5


def is_loopback(url: str) -> bool:
    host = (httpx.URL(url).host or "").lower() if url.startswith(("http://", "https://")) else ""
    return host in ("localhost", "::1") or host.startswith("127.")


class ProcessClient:
    """An httpx.Client created on first use, and again in a forked worker (a pool's sockets
    must not be shared between processes) or when the timeout setting changes."""

    def __init__(self):
        self._client: httpx.Client | None = None
        self._key: tuple | None = None
        self._lock = threading.Lock()

    def get(self, timeout: float) -> httpx.Client:
        key = (os.getpid(), timeout)
        with self._lock:
            if self._client is None or self._key != key:
                if self._client is not None and self._key[0] == os.getpid():
                    self._client.close()
                self._client = httpx.Client(
                    timeout=httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout)),
                    follow_redirects=False,
                )
                self._key = key
            return self._client


def save_stream(response: httpx.Response, destination: Path, vendor: str) -> None:
    """Write a streamed body to `destination`, or nothing at all if it fails."""
    written = 0
    try:
        with destination.open("wb") as fh:
            for chunk in response.iter_bytes(64 * 1024):
                written += len(chunk)
                if written > MAX_DOWNLOAD_BYTES:
                    raise ProviderError(
                        f"The file from {vendor} is far too large for a clip.", permanent=True
                    )
                fh.write(chunk)
    except BaseException:
        destination.unlink(missing_ok=True)
        raise


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After as seconds (a number or an HTTP date), or None when absent or unreadable."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def text(value) -> str:
    """A JSON value as a short display string; objects and lists are not text."""
    if value is None or isinstance(value, (dict, list)):
        return ""
    return str(value).strip()[:2000]


def error_body(response: httpx.Response) -> dict:
    """A refusal's body as a JSON object, or {} (not JSON, or not an object): error
    bodies come from a vendor's edge as often as from its API."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def decimal_or_none(value) -> Decimal | None:
    """A non-negative finite amount, or None (booleans, junk, NaN are not amounts)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        amount = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return amount if amount.is_finite() and amount >= 0 else None


@contextlib.contextmanager
def transport_errors(vendor: str, base_url_setting: str, method: str):
    """Turn httpx's failures into ProviderErrors that say whether a retry is safe.

    A failure before anything left this machine (no connection) is plainly transient. A
    failure after the request may have arrived (a read timeout, a dropped connection) is,
    for a create (POST), an unknown outcome: the provider may be making the clip now."""
    try:
        yield
    except ProviderError:
        raise
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError) as exc:
        raise ProviderError(f"Could not reach {vendor} ({type(exc).__name__}); will try again.") from exc
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise ProviderError(
            f"The {vendor} address is not a valid URL (check {base_url_setting}).", permanent=True
        ) from exc
    except httpx.HTTPError as exc:
        raise ProviderError(
            f"{vendor} did not answer in time ({type(exc).__name__}).", outcome_unknown=method == "POST"
        ) from exc


def json_object(response: httpx.Response, vendor: str, method: str, allow_list: bool = False) -> dict | list:
    """The JSON object of a 2xx answer (or list, with `allow_list`); anything else is a
    transient error (an unknown outcome for a create)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) and not (allow_list and isinstance(body, list)):
        raise ProviderError(
            f"{vendor} sent an answer that is not JSON; will try again.",
            outcome_unknown=method == "POST",
            status_code=response.status_code,
        )
    return body


class HostedProvider(Provider):
    """A provider behind an HTTP API: its settings, and the one request function.

    The registry builds one instance per process and keeps it, so every call shares one
    connection pool. Settings are read at each call (tests and the Providers page change
    them at run time). A vendor module names its settings, its auth headers and its error
    mapping; `request` does the rest the same way for every vendor."""

    # The vendor's name in messages ("Pictory could not ..."), shorter than `label`.
    vendor = ""
    key_setting = ""
    base_url_setting = ""
    timeout_setting = ""
    # The setting of the generation deadline in minutes (empty: CLIP_DEADLINE_MINUTES).
    deadline_setting = ""
    # The poll interval's setting, default and documented bounds (seconds).
    poll_setting = ""
    poll_default = 15.0
    poll_bounds = (10.0, 30.0)

    def __init__(self):
        self.secret_settings = (self.key_setting,)
        self._client = ProcessClient()

    @property
    def user_agent(self) -> str:
        return "LastframeStudio/1.0"

    @property
    def poll_interval(self) -> float:
        """The poll setting kept within the provider's documented bounds; below them only
        against a loopback test server (is_loopback)."""
        low, high = self.poll_bounds
        if is_loopback(self.base_url):
            low = LOOPBACK_FLOOR
        return clamped_seconds(getattr(settings, self.poll_setting, None), self.poll_default, low, high)

    @property
    def deadline_minutes(self) -> float:
        value = getattr(settings, self.deadline_setting, None) if self.deadline_setting else None
        if value in (None, ""):
            value = settings.CLIP_DEADLINE_MINUTES
        return max(0.1, float(value))

    @property
    def api_key(self) -> str:
        """The key calls use: one being tried ("Test"), else the environment's (it wins),
        else one an admin pasted on the Providers page (read at each call, so web and
        worker use a new key at once)."""
        trying = getattr(_trial, "keys", {}).get(self.name)
        if trying:
            return trying
        return getattr(settings, self.key_setting, "") or keys.stored(self.name)

    @property
    def key_source(self) -> str:
        """Where the key in use comes from: "environment", "studio" or "" (none)."""
        if getattr(settings, self.key_setting, ""):
            return "environment"
        return "studio" if keys.stored(self.name) else ""

    @contextlib.contextmanager
    def trying_key(self, key: str):
        """Calls made inside use `key` instead of the configured one (this thread only)."""
        tried = getattr(_trial, "keys", None)
        if tried is None:
            tried = _trial.keys = {}
        before = tried.get(self.name)
        tried[self.name] = key
        try:
            yield
        finally:
            if before is None:
                tried.pop(self.name, None)
            else:
                tried[self.name] = before

    def try_key(self, key: str, call) -> KeyCheck:
        """Run `call()` (the vendor's one cheap authenticated request, returning what to say
        of an accepted key) with `key`. A 401 is a refusal; any other failure means the
        key could not be tested, and says why."""
        with self.trying_key(key):
            try:
                return KeyCheck(True, call())
            except ProviderError as exc:
                if exc.status_code == 401:
                    return KeyCheck(
                        False,
                        f"{self.vendor} refused this key: it is wrong, incomplete or no longer "
                        "active. Copy it again from your account and paste the whole key.",
                    )
                if exc.status_code is None:
                    return KeyCheck(
                        None,
                        f"Could not reach {self.vendor} to test the key: check the studio's "
                        "connection, then press Test again.",
                    )
                return KeyCheck(None, f"The key could not be tested: {exc.message}")

    @property
    def base_url(self) -> str:
        return (getattr(settings, self.base_url_setting, "") or "").rstrip("/")

    @property
    def timeout(self) -> float:
        return float(getattr(settings, self.timeout_setting, 30))

    def is_enabled(self) -> bool:
        return bool(self.api_key)

    def waiting_label(self) -> str:
        return f"Waiting for a working {self.vendor} key"

    def is_api(self, url: str) -> bool:
        """The key goes only to the API itself: result files live on storage hosts that may
        refuse, or log, a foreign credential."""
        return url.startswith(self.base_url + "/")

    def auth_headers(self) -> dict[str, str]:
        """The headers that authenticate a call to the API."""
        raise NotImplementedError

    def api_error(self, response: httpx.Response, *, download: bool, not_found: str) -> ProviderError:
        """A non-2xx answer in our words (`download`: a result file, not an API call)."""
        raise NotImplementedError

    def request(
        self,
        method: str,
        path: str,
        *,
        json: dict | None = None,
        stream_to: Path | None = None,
        timeout: float | None = None,
        not_found: str = "",
        allow_list: bool = False,
    ) -> dict | list:
        """Send one request and return the JSON body of a 2xx answer, or write the body to
        `stream_to`. Every other outcome becomes a ProviderError in our words.

        `path` is relative to the base URL, or an absolute URL (polling URLs, result files).
        Redirects are followed for files only; httpx drops the Authorization header when a
        redirect leaves the API's origin."""
        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}{path}"
        headers = {"Accept": "application/json"} if stream_to is None else {}
        headers["User-Agent"] = self.user_agent
        if self.is_api(url):
            headers.update(self.auth_headers())
        if json is not None:
            headers["Content-Type"] = "application/json"
        extra = {} if timeout is None else {"timeout": httpx.Timeout(timeout, connect=min(timeout, 10.0))}
        client = self._client.get(self.timeout)
        with transport_errors(self.vendor, self.base_url_setting, method):
            if stream_to is not None:
                with client.stream(method, url, headers=headers, follow_redirects=True, **extra) as response:
                    if response.status_code >= 300:
                        response.read()
                        raise self.api_error(response, download=True, not_found=not_found)
                    save_stream(response, stream_to, self.vendor)
                return {}
            response = client.request(method, url, headers=headers, json=json, **extra)
        if 200 <= response.status_code < 300:
            return json_object(response, self.vendor, method, allow_list)
        error = self.api_error(response, download=False, not_found=not_found)
        if method == "POST" and response.status_code >= 500 and not error.permanent:
            # A create answered by a server error may have made the job before failing: no
            # idempotency key tells the two apart (contracts.md, "Lost answers").
            error.outcome_unknown = True
        raise error
