"""Logging filters of the studio's own (configured in settings.LOGGING)."""

import logging
import re

# /hooks/<provider>/<token>/ as it appears in a request line, a path or a full URL.
HOOK_TOKEN = re.compile(r"(/hooks/[^/\s?#\"']+/)[^/\s?#\"']+")
MASK = r"\1…"


def mask_hook_tokens(text: str) -> str:
    return HOOK_TOKEN.sub(MASK, text)


class MaskHookTokens(logging.Filter):
    """Replace the token segment of webhook paths in a record with "…". Access logs
    (runserver's django.server, gunicorn.access) name the path in the message or in its
    arguments (a tuple, or gunicorn's dict of atoms); the record is never dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logging's to report, not ours
            return True
        if "/hooks/" in message:
            # Formatted first: the token may be in the message or in any of its arguments.
            record.msg, record.args = mask_hook_tokens(message), ()
        return True
