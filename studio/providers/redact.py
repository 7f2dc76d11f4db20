"""One redaction for every piece of text that comes from a provider.

Providers sometimes echo what they were sent: a key in an error body ("invalid key
sk-or-v1-…"), an Authorization header in a debug message. Such text must never reach a
page, a log line or the database as it came. `redact` is applied where provider text enters
the studio (ProviderError messages and field errors, RemoteStatus.error, model names and
descriptions) and, through `RedactingFilter`, to every log record.

It removes three things: the secrets configured right now (each provider's key, read through
its own `api_key`, and its other secret settings), bearer tokens and credential-looking
assignments, and strings shaped like the keys of the services the studio talks to.
"""

from __future__ import annotations

import logging
import re
import threading

REDACTED = "[redacted]"

# Prefixes of API keys and signing secrets (Pictory, OpenRouter, OpenAI-style, webhook secrets,
# Stripe-style live/test keys), followed by the key's body.
_KEY_SHAPED = re.compile(
    r"(?<![A-Za-z0-9])(?:pictai_|sk-or-v\d+-|sk-or-|sk-proj-|sk-ant-|sk-|whsec_|rk_live_|rk_test_|"
    r"sk_live_|sk_test_)[A-Za-z0-9_\-]{6,}"
)
# "Bearer <token>", "Basic <token>": whatever the scheme carries is a credential.
_SCHEME = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=\-]{6,}")
# authorization: <x>, "api_key": "<x>", x-api-key=<x>, secret=<x>, password: <x>
_ASSIGNED = re.compile(
    r"(?i)\b(authorization|x-api-key|api[_\- ]?key|apikey|access[_\-]?token|secret|password)"
    r"(\"?'?\s*[:=]\s*[\"']?)(?!bearer\b|basic\b|\[redacted\])"
    # A value that looks like a credential: with a digit, or long (not "missing", "invalid").
    r"((?=[^\s\"',;&]*\d)[^\s\"',;&]{6,}|[^\s\"',;&]{20,})"
)
# A long opaque token: 32+ URL-safe characters with at least three each of upper case,
# lower case and digits (generated secrets look like this; UUIDs, hex digests and names such
# as "Process-<hex>" do not).
_OPAQUE = re.compile(
    r"(?<![A-Za-z0-9_\-])(?=(?:[a-z0-9_\-]*[A-Z]){3})(?=(?:[A-Z0-9_\-]*[a-z]){3})(?=(?:[A-Za-z_\-]*[0-9]){3})"
    r"[A-Za-z0-9_\-]{32,}(?![A-Za-z0-9_\-])"
)
# Secrets shorter than this are not searched for as exact values (they would match words).
_MIN_SECRET = 6


_reading = threading.local()
_last_known: list[str] = []
# What gives the secret values: the registry's secret_values, which it hands over as it is
# imported (importing this module imports the registry first). Handed over rather than
# imported, because the registry imports the contract, which imports this module.
_secret_source = None


def read_secrets_from(source) -> None:
    """Take the secret values from `source()` (a function returning a list of strings)."""
    global _secret_source
    _secret_source = source


def configured_secrets() -> list[str]:
    """The secret values set now, longest first. Read through the registry (each hosted
    provider's `api_key`), so a key stored elsewhere than the environment is covered too.
    An error while reading them must never stop a message or a log line: then the last ones
    known. Reading them may itself log (a stored key that cannot be decrypted), and that
    line comes back here: it gets the last ones known rather than reading them again."""
    global _last_known
    if getattr(_reading, "active", False) or _secret_source is None:
        return _last_known
    _reading.active = True
    try:
        values = _secret_source()
    except Exception:
        return _last_known
    finally:
        _reading.active = False
    _last_known = sorted(
        {v for v in values if isinstance(v, str) and len(v) >= _MIN_SECRET}, key=len, reverse=True
    )
    return _last_known


def redact(text, secrets: list[str] | None = None):
    """`text` with configured secrets, bearer tokens and key-shaped strings replaced by
    "[redacted]". Anything that is not a string is returned as it is."""
    if not isinstance(text, str) or not text:
        return text
    for secret in configured_secrets() if secrets is None else secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _SCHEME.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _ASSIGNED.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _KEY_SHAPED.sub(REDACTED, text)
    return _OPAQUE.sub(REDACTED, text)


def redact_field_errors(field_errors: dict | None) -> dict[str, list[str]]:
    """A provider's objections per field, each message redacted."""
    secrets = configured_secrets()
    return {
        name: [redact(str(m), secrets) for m in messages] for name, messages in (field_errors or {}).items()
    }


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every record's message (with its arguments merged in),
    so a provider's text logged anywhere, by us or a library, is logged without secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # The traceback's text carries the exception's message: format it once, redacted.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True
