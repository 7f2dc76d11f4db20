"""Provider keys pasted on the Providers page: kept encrypted at rest, read back by every
process (web and worker) as soon as they change, with no restart.

A key is encrypted with Fernet (AES in CBC mode with an HMAC, from `cryptography`) under
STUDIO_ENCRYPTION_KEY, or under a key derived from SECRET_KEY when that is unset, so the
database never holds a plain key. Reading is one small query per read (the table has a row
per connected provider at most): a process decrypts again only when a row's ciphertext has
changed, so a key saved in the web process is used by the worker on its next call.
"""

from __future__ import annotations

import base64
import logging
import re
import threading

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import DatabaseError

from .models import ProviderKey

log = logging.getLogger(__name__)

# Longer than any provider's key; a paste this long is something else (a whole file).
MAX_KEY_LENGTH = 500
# Quotes people paste keys inside: straight, typographic, and backticks.
QUOTES = "\"'`“”‘’"

_lock = threading.Lock()
# provider → (ciphertext, plain key or "" when it cannot be decrypted)
_cache: dict[str, tuple[str, str]] = {}
_fernets: dict[tuple[str, str], Fernet] = {}


class KeyRefused(ValueError):
    """A pasted key that cannot be a key (empty, spaces inside, far too long): the message
    says so in plain words, for beside the field."""


def _fernet() -> Fernet:
    secret, fallback = settings.STUDIO_ENCRYPTION_KEY, settings.SECRET_KEY
    cached = _fernets.get((secret, fallback))
    if cached is None:
        if secret:
            key = secret.encode("ascii")
        else:
            # HKDF gives a proper 32-byte key from a passphrase-like SECRET_KEY; the info
            # string keeps it apart from anything else derived from SECRET_KEY.
            derived = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None, info=b"lastframe-studio provider keys"
            ).derive(fallback.encode())
            key = base64.urlsafe_b64encode(derived)
        cached = _fernets[(secret, fallback)] = Fernet(key)
    return cached


def clean(raw: str, setting: str = "") -> str:
    """The key in a paste: surrounding spaces, line breaks and quotes trimmed, and a
    leading `NAME=` (a line copied from a .env file) dropped. KeyRefused when what is left
    cannot be a key."""
    key = (raw or "").strip()
    if setting and key.upper().startswith(f"{setting}="):
        key = key[len(setting) + 1 :]
    previous = None
    while key != previous:
        previous = key
        key = key.strip().strip(QUOTES)
    if not key:
        raise KeyRefused("Paste the key: this field is empty.")
    if len(key) > MAX_KEY_LENGTH:
        raise KeyRefused(f"That is longer than any API key ({len(key):,} characters): paste the key alone.")
    if re.search(r"\s", key):
        raise KeyRefused("The key has a space or a line break in the middle: copy it again, in one piece.")
    return key


def encrypt(key: str) -> str:
    return _fernet().encrypt(key.encode()).decode("ascii")


def decrypt(token: str) -> str:
    """The plain key, or "" when it cannot be read (the encryption key changed)."""
    try:
        return _fernet().decrypt(token.encode("ascii")).decode()
    except (InvalidToken, ValueError):
        return ""


def save(provider: str, key: str, user=None) -> None:
    ProviderKey.objects.update_or_create(
        provider=provider, defaults={"encrypted": encrypt(key), "updated_by": user}
    )


def remove(provider: str) -> bool:
    deleted, _ = ProviderKey.objects.filter(provider=provider).delete()
    return bool(deleted)


def stored(provider: str) -> str:
    """The key pasted for `provider`, or "" (none, or unreadable). One query; the key is
    decrypted again only when its row changed since this process last read it."""
    try:
        rows = dict(ProviderKey.objects.values_list("provider", "encrypted"))
    except DatabaseError:
        # No table yet (a command run before `migrate`), or a broken transaction: what
        # this process knew last is the best answer.
        log.debug("provider keys could not be read", exc_info=True)
        entry = _cache.get(provider)
        return entry[1] if entry else ""
    unreadable = False
    with _lock:
        for name in list(_cache):
            if name not in rows:
                del _cache[name]
        token = rows.get(provider)
        if token is None:
            return ""
        entry = _cache.get(provider)
        if entry is None or entry[0] != token:
            plain = decrypt(token)
            unreadable = not plain
            entry = _cache[provider] = (token, plain)
    # Logged outside the lock: the log's redaction reads the keys again (this function).
    if unreadable:
        log.warning(
            "the saved key of %s cannot be decrypted (STUDIO_ENCRYPTION_KEY or SECRET_KEY changed); "
            "paste it again on the Providers page",
            provider,
        )
    return entry[1]


def saved_row(provider: str) -> ProviderKey | None:
    """The saved key's row (who saved it and when), or None when none is saved."""
    return ProviderKey.objects.select_related("updated_by").filter(provider=provider).first()


def last_four(key: str) -> str:
    """What the Providers page may show of a key: its last four characters."""
    return key[-4:] if len(key) >= 8 else ""
