"""Provider text never carries a secret into a page, a log line or the database.

Providers echo what they are sent: a key in an error body, an Authorization header in a
debug message. The fakes here do exactly that (echo_key), and the studio must show, log and
store their words without it."""

from __future__ import annotations

import html
import io
import logging
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from studio.models import Clip
from studio.providers import ProviderError, RemoteStatus
from studio.providers.redact import REDACTED, RedactingFilter, redact
from tests.conftest import run_enqueued
from tests.fakes.openrouter import FakeOpenRouter, error, render_clip
from tests.fakes.pictory import FakePictory, rendered

from .worker import poll_due_once

PROMPT = "A lighthouse at dusk, waves crashing, slow dolly in"
PICTORY_KEY = "pictai_live_Q2xpcFN0dWRpbzEyMzQ1Njc4OTA"
OPENROUTER_KEY = "sk-or-v1-9f8e7d6c5b4a39281706f5e4d3c2b1a0fedcba9876543210"


# --- The function -----------------------------------------------------------------------------


def test_a_configured_key_is_removed_wherever_it_appears(settings):
    settings.PICTORY_API_KEY = "plainsecretvalue42"  # not key-shaped: found because it is configured
    assert redact("refused plainsecretvalue42 (twice: plainsecretvalue42)") == (
        f"refused {REDACTED} (twice: {REDACTED})"
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Authorization: Bearer abc.DEF-1234567890", f"Authorization: Bearer {REDACTED}"),
        ("header authorization=pictai_abcdef123456", f"header authorization={REDACTED}"),
        ('{"api_key": "k3y-v4lue-998877"}', f'{{"api_key": "{REDACTED}"}}'),
        ("bad key sk-or-v1-0123456789abcdef0123", f"bad key {REDACTED}"),
        ("sk-proj-Abc123Def456Ghi789 rejected", f"{REDACTED} rejected"),
        ("secret whsec_live_9a8b7c6d5e", f"secret {REDACTED}"),
        ("token AbCdEfGhIjKlMnOpQrStUvWxYz0123456789 expired", f"token {REDACTED} expired"),
    ],
)
def test_bearer_tokens_assignments_and_key_shaped_strings_are_removed(text, expected, settings):
    settings.PICTORY_API_KEY = settings.OPENROUTER_API_KEY = ""
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Pictory has no record of job 7d4bd7f1-0c3b-4f0e-9a57-000000000001.",
        "The prompt was rejected by the content policy.",
        "API key: missing",
        "duration must be one of [4, 6, 8]",
        "https://cdn.example.com/v/3f2a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a/video.mp4",
        "Process-7f3a9c2b4d6e8f0a1b3c5d7e9f1a3b5c processing poll due clips",
    ],
)
def test_ordinary_provider_text_is_left_as_it_is(text, settings):
    settings.PICTORY_API_KEY = settings.OPENROUTER_API_KEY = ""
    assert redact(text) == text


def test_errors_and_statuses_are_redacted_on_the_way_in(settings):
    settings.OPENROUTER_API_KEY = OPENROUTER_KEY
    exc = ProviderError(f"refused {OPENROUTER_KEY}", field_errors={"prompt": [f"key {OPENROUTER_KEY}"]})
    assert OPENROUTER_KEY not in exc.message + str(exc) + repr(exc.field_errors)
    assert RemoteStatus("failed", error=f"Bearer {OPENROUTER_KEY}").error == f"Bearer {REDACTED}"


def test_every_log_record_is_redacted_by_the_configured_handler(settings):
    settings.PICTORY_API_KEY = PICTORY_KEY
    handlers = [
        h for h in logging.getLogger().handlers if any(isinstance(f, RedactingFilter) for f in h.filters)
    ]
    assert handlers, "the console handler of settings.LOGGING has no RedactingFilter"
    with log_output() as output:
        logging.getLogger("httpx").warning("request failed with %s", f"Authorization: {PICTORY_KEY}")
        try:
            raise ValueError(f"echo {PICTORY_KEY}")
        except ValueError:
            logging.getLogger("studio.jobs").exception("a traceback that carries it")
    text = output.getvalue()
    assert "request failed with Authorization:" in text and "a traceback that carries it" in text
    assert PICTORY_KEY not in text


class log_output:
    """What the studio's configured log handlers write, captured (after their filters)."""

    def __enter__(self):
        self.buffer = io.StringIO()
        self.swapped = []
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and any(
                isinstance(f, RedactingFilter) for f in handler.filters
            ):
                self.swapped.append((handler, handler.setStream(self.buffer)))
        return self.buffer

    def __exit__(self, *exc):
        for handler, stream in self.swapped:
            handler.setStream(stream)


# --- End to end, with providers that echo the key ---------------------------------------------


def everything_stored() -> str:
    """Every row of every table, as text."""
    rows = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            rows += [repr(row) for row in cursor.fetchall()]
    return "\n".join(rows)


def pages(client, clips) -> str:
    urls = [reverse("home"), reverse("providers")]
    for clip in clips:
        urls += [reverse("clip_card", args=[clip.pk]), reverse("clip_detail", args=[clip.pk])]
        if clip.field_errors:
            urls.append(reverse("retry_clip", args=[clip.pk]))
    return "\n".join(html.unescape(client.get(url).content.decode()) for url in urls)


def make_due(clip):
    Clip.objects.filter(pk=clip.pk).update(next_poll_at=timezone.now() - timedelta(seconds=1))


@pytest.fixture
def echoing(settings):
    rendered("16:9")
    render_clip("16:9")
    pictory = FakePictory(key=PICTORY_KEY).start()
    openrouter = FakeOpenRouter(key=OPENROUTER_KEY).start()
    pictory.echo_key = openrouter.echo_key = True
    settings.PICTORY_API_KEY, settings.PICTORY_API_BASE_URL = PICTORY_KEY, pictory.base_url
    settings.OPENROUTER_API_KEY, settings.OPENROUTER_API_BASE_URL = OPENROUTER_KEY, openrouter.base_url
    settings.PICTORY_TIMEOUT_SECONDS = settings.OPENROUTER_TIMEOUT_SECONDS = 2
    settings.POLL_SWEEP_SECONDS = 0
    yield pictory, openrouter
    pictory.stop()
    openrouter.stop()


@pytest.mark.django_db(transaction=True)
def test_a_key_echoed_by_providers_reaches_no_page_log_line_or_database_field(signed_in, echoing, enqueued):
    pictory, openrouter = echoing
    clips = []
    with log_output() as output:
        # Pictory: a 400 whose field message echoes the key; a failed job that echoes it.
        pictory.fields_shape = "name"
        response = signed_in.post(
            reverse("generate"),
            {"model": "pictory:veo3.1", "prompt": PROMPT, "aspect_ratio": "16:9", "duration": "4"},
        )
        assert response.status_code == 302
        pictory.reply_to_create(
            (400, {"code": "INVALID_REQUEST_BODY", "message": f"bad key {PICTORY_KEY}", "fields": []})
        )
        run_enqueued(enqueued)
        clips.append(Clip.objects.latest("pk"))
        for model, data in (
            ("pictory:veo3.1", {"aspect_ratio": "16:9", "duration": "4"}),
            ("openrouter:google/veo-3.1", {"aspect_ratio": "16:9", "duration": "4", "resolution": "720p"}),
        ):
            assert (
                signed_in.post(reverse("generate"), {"model": model, "prompt": PROMPT, **data}).status_code
                == 302
            )
            run_enqueued(enqueued)
            clip = Clip.objects.latest("pk")
            assert clip.status == Clip.Status.RUNNING, clip.error
            (pictory if model.startswith("pictory") else openrouter).script_polls("failed")
            make_due(clip)
            poll_due_once()
            clips.append(clip)
        # OpenRouter: a 400 that echoes it (beside a field) and a 418 whose message does.
        openrouter.create_replies.append(error(400, f"duration invalid for key {OPENROUTER_KEY}"))
        openrouter.create_replies.append(error(418, f"teapot says Bearer {OPENROUTER_KEY}"))
        for _ in range(2):
            signed_in.post(
                reverse("generate"),
                {
                    "model": "openrouter:google/veo-3.1",
                    "prompt": PROMPT,
                    "aspect_ratio": "16:9",
                    "duration": "4",
                    "resolution": "720p",
                },
            )
            run_enqueued(enqueued)
            clips.append(Clip.objects.latest("pk"))
        # The model list read with a key refused: the fake echoes it in its 401.
        openrouter.key_refused = True
        signed_in.post(reverse("refresh_models"))
        logging.getLogger("studio.jobs").warning(
            "provider said: %s", f"Authorization: Bearer {OPENROUTER_KEY}"
        )
        openrouter.key_refused = False
    for clip in clips:
        clip.refresh_from_db()
        assert clip.status == Clip.Status.FAILED, (clip.pk, clip.status)
    # The provider's words survive, less the key.
    assert any("the provider gave up on it" in c.error for c in clips)
    assert any(REDACTED in c.error for c in clips)
    shown = pages(signed_in, clips)
    for key in (PICTORY_KEY, OPENROUTER_KEY):
        assert key not in shown, "a page shows a key"
        assert key not in output.getvalue(), "a log line carries a key"
        assert key not in everything_stored(), "the database holds a key"
    assert "provider said: Authorization: Bearer" in output.getvalue()


def test_a_log_line_written_while_the_keys_are_read_does_not_lock_up(settings, caplog, db):
    """Reading a stored key may log (it cannot be decrypted); the log's redaction reads the
    keys again. That must come back at once, not wait on itself."""
    import threading

    from studio import keys
    from studio.providers.redact import redact

    keys.save("pictory", "pictai_saved_then_unreadable_0123")
    settings.PICTORY_API_KEY = ""
    settings.STUDIO_ENCRYPTION_KEY = ""
    settings.SECRET_KEY = "another-secret-key-so-the-saved-key-cannot-be-read"
    keys._cache.clear()
    done = []
    worker = threading.Thread(target=lambda: done.append(keys.stored("pictory")), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert done == [""], "reading an unreadable key locked up"
    assert "[redacted]" in redact("key pictai_saved_then_unreadable_0123")
