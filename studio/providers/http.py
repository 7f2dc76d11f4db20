"""What every HTTP provider does the same way: one connection pool per process, reading
Retry-After, saving a result file with a size cap, and tolerant readers of JSON values.

Each vendor module keeps its own `_request` (the one place that builds its requests and
maps its errors); these helpers are the parts that would otherwise be copied."""

from __future__ import annotations

import contextlib
import email.utils
import os
import threading
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path

import httpx

from .base import Provider, ProviderError

# A hosted model may take minutes, but one HTTP exchange should not: anything slower than
# this to connect is a network problem.
CONNECT_TIMEOUT = 10.0
# A result file larger than this is not a few-second clip: stop rather than fill the disk.
MAX_DOWNLOAD_BYTES = 2 * 1024**3


def clamped_seconds(value, default: float, low: float, high: float) -> float:
    """A seconds setting as a number kept within [low, high]; `default` when unreadable."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = default
    return min(high, max(low, seconds))


class ProcessClient:
    """An httpx.Client created on first use, and again in a forked worker: a pool's
    sockets must not be shared between processes."""

    def __init__(self, timeout: float, headers: dict[str, str] | None = None):
        self.timeout = timeout
        self.headers = dict(headers or {})
        self._client: httpx.Client | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def get(self) -> httpx.Client:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client = httpx.Client(
                    timeout=httpx.Timeout(self.timeout, connect=min(CONNECT_TIMEOUT, self.timeout)),
                    headers=self.headers,
                    follow_redirects=False,
                )
                self._pid = os.getpid()
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None and self._pid == os.getpid():
                self._client.close()
            self._client = None


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


def json_object(response: httpx.Response, vendor: str, method: str) -> dict:
    """The JSON object of a 2xx answer; anything else is a transient error (an unknown
    outcome for a create)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ProviderError(
            f"{vendor} sent an answer that is not JSON; will try again.",
            outcome_unknown=method == "POST",
            status_code=response.status_code,
        )
    return body


class HostedProvider(Provider):
    """A provider behind an HTTP API, shared per configuration and process.

    The registry is asked for providers on every form render; a new client each time would
    leak sockets, so `shared()` keeps one instance (one connection pool) and replaces it
    only when the settings change (tests, a reload). Subclasses say which settings make
    their configuration and how often to poll."""

    _shared = None
    _shared_lock = threading.Lock()

    def __init__(self, api_key: str, base_url: str, timeout: float):
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.poll_interval = self.poll_seconds()
        self._client = ProcessClient(timeout, {"User-Agent": self.user_agent})

    user_agent = "LastframeStudio/1.0"

    @classmethod
    def configuration(cls) -> tuple[str, str, float]:
        """(API key, base URL, timeout) from the settings."""
        raise NotImplementedError

    @staticmethod
    def poll_seconds() -> float:
        raise NotImplementedError

    @classmethod
    def shared(cls):
        config = cls.configuration()
        with cls._shared_lock:
            current = cls.__dict__.get("_shared")  # each subclass keeps its own
            if current is None or current._config() != config:
                if current is not None:
                    current.close()
                current = cls(*config)
                cls._shared = current
            current.poll_interval = cls.poll_seconds()
            return current

    def _config(self) -> tuple:
        return (self.api_key, self.base_url, self.timeout)

    def close(self) -> None:
        self._client.close()
