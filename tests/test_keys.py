"""Provider keys pasted on the Providers page: tested with one call that spends nothing,
stored encrypted, used at once, the environment winning, and never shown again."""

import logging
from contextlib import contextmanager

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format

from studio import keys
from studio.models import Clip, ProviderKey
from studio.providers import get_provider
from studio.providers.http import HostedProvider
from tests.conftest import free_port, run_enqueued
from tests.fakes.openrouter import FakeOpenRouter
from tests.fakes.pictory import FakePictory
from tests.test_settings import read_settings

pytestmark = pytest.mark.django_db

PASTED = "pictai_pasted_9f8e7d6c5b4a3210"


@pytest.fixture
def as_admin(signed_in, user):
    """The signed-in creator, made an admin of the studio."""
    user.is_superuser = True
    user.save()
    return signed_in


@contextmanager
def serving(fake, settings, prefix):
    """A fake provider that knows only the key an admin will paste: the environment (the
    settings named PREFIX_...) holds none."""
    fake.start()
    setattr(settings, f"{prefix}_API_KEY", "")
    setattr(settings, f"{prefix}_API_BASE_URL", fake.base_url)
    setattr(settings, f"{prefix}_TIMEOUT_SECONDS", 2)
    settings.POLL_SWEEP_SECONDS = 0  # one pass per sweep: tests poll by hand
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def pictory(settings):
    with serving(FakePictory(key=PASTED), settings, "PICTORY") as fake:
        yield fake


@pytest.fixture
def openrouter(settings):
    with serving(FakeOpenRouter(key="sk-or-v1-pasted-0123456789"), settings, "OPENROUTER") as fake:
        yield fake


def pictory_clip(owner, status, prompt):
    return Clip.objects.create(
        owner=owner,
        provider="pictory",
        model_key="veo3.1",
        model_label="Veo 3.1 · Pictory",
        prompt=prompt,
        status=status,
    )


def post_key(client, provider="pictory", key=PASTED, action="save", htmx=True, **extra):
    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    return client.post(
        reverse("provider_key", args=[provider]), {"key": key, "action": action, **extra}, **headers
    )


def every_stored_value() -> str:
    """Every value in every table of the database, as one string."""
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            found.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(found)


# --- Storage ---------------------------------------------------------------------------------


def test_the_database_holds_no_plaintext_key(as_admin, pictory):
    saved = post_key(as_admin)
    # The browser goes to the provider's section, a new page that shows its new state.
    assert saved.status_code == 204 and saved["HX-Redirect"] == "/providers/?changed=pictory#provider-pictory"
    row = ProviderKey.objects.get(provider="pictory")
    assert keys.decrypt(row.encrypted) == PASTED
    stored = every_stored_value()
    assert PASTED not in stored
    assert PASTED[-12:] not in stored  # not even most of it


def test_without_an_encryption_key_one_derived_from_secret_key_is_used(settings):
    settings.STUDIO_ENCRYPTION_KEY = ""
    settings.SECRET_KEY = "one-secret"
    token = keys.encrypt(PASTED)
    assert keys.decrypt(token) == PASTED
    settings.SECRET_KEY = "another-secret"
    assert keys.decrypt(token) == ""


def test_a_key_saved_under_another_encryption_key_cannot_be_read_and_the_page_says_so(
    as_admin, pictory, settings
):
    settings.STUDIO_ENCRYPTION_KEY = "geWmAebsTH9abV-kMARTbbf8KhKBRtNt35PVVKaHtbE="
    keys.save("pictory", PASTED)
    assert get_provider("pictory").api_key == PASTED
    # The studio restarted with another STUDIO_ENCRYPTION_KEY: a fresh process.
    keys._cache.clear()
    settings.STUDIO_ENCRYPTION_KEY = "GWLirjnZ4BIxEOwKE_nBKn6n22u-qSmpv20qkglz5Yg="
    provider = get_provider_class("pictory")()
    assert provider.api_key == "" and not provider.is_enabled()
    html = as_admin.get(reverse("providers")).content.decode()
    assert "cannot be read any more" in html and "Remove the saved key" in html


def test_a_malformed_encryption_key_stops_start_up_with_a_message():
    done = read_settings(["STUDIO_ENCRYPTION_KEY"], env={"STUDIO_ENCRYPTION_KEY": "not-a-fernet-key"})
    assert done.returncode != 0
    assert "STUDIO_ENCRYPTION_KEY must be a Fernet key" in done.stderr


@pytest.mark.parametrize(
    "pasted",
    [
        f"  {PASTED}\n",
        f'"{PASTED}"',
        f"'{PASTED}'",
        f"“{PASTED}”",
        f" `{PASTED}` ",
        f"PICTORY_API_KEY={PASTED}",
    ],
)
def test_a_key_pasted_with_spaces_or_quotes_is_trimmed(as_admin, pictory, pasted):
    assert post_key(as_admin, key=pasted).status_code == 204
    assert get_provider("pictory").api_key == PASTED


@pytest.mark.parametrize("pasted", ["", "   ", '""', "\n"])
def test_an_empty_key_gets_a_message_beside_the_field_and_nothing_is_sent(as_admin, pictory, pasted):
    response = post_key(as_admin, key=pasted, htmx=False)
    assert response.status_code == 422
    html = response.content.decode()
    assert 'id="id_pictory_key_error"' in html and "Paste the key: this field is empty." in html
    field = html[html.index('id="id_pictory_key"') - 300 : html.index('id="id_pictory_key"') + 10]
    assert 'aria-invalid="true"' in field and "id_pictory_key_feedback" in field
    assert pictory.requests == [] and not ProviderKey.objects.exists()


def test_a_key_with_a_space_inside_is_refused_with_a_reason(as_admin, pictory):
    response = post_key(as_admin, key="pictai_abc def")
    assert response.status_code == 422
    assert "space or a line break in the middle" in response.content.decode()
    assert not ProviderKey.objects.exists()


# --- Test, save, save anyway --------------------------------------------------------------------


def test_test_makes_one_call_that_spends_nothing_says_the_credit_left_and_saves_nothing(as_admin, pictory):
    response = post_key(as_admin, action="test")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Pictory accepted the key: 21310 of 22000 AI credits left this billing term." in html
    assert [r.path for r in pictory.requests] == ["/pictoryapis/v1/quota"]
    assert pictory.requests[0].headers["authorization"] == PASTED
    assert not ProviderKey.objects.exists() and not get_provider_enabled("pictory")


def get_provider_enabled(name):
    try:
        return get_provider(name).is_enabled()
    except LookupError:
        return False


def test_a_key_that_may_not_read_its_quota_is_checked_with_a_job_lookup(as_admin, pictory):
    pictory.quota = None
    html = post_key(as_admin, action="test").content.decode()
    assert "Pictory accepted the key (it may not read its credit quota)." in html
    assert [r.path for r in pictory.requests][-1].startswith("/pictoryapis/v1/jobs/")
    assert pictory.jobs == {}


def test_a_wrong_key_is_refused_in_plain_words_and_saved_only_with_save_anyway(as_admin, pictory):
    response = post_key(as_admin, key="pictai_wrong_key_123456")
    html = response.content.decode()
    assert response.status_code == 200
    assert "Pictory refused this key: it is wrong, incomplete or no longer active." in html
    assert "Nothing was saved." in html and 'value="save_anyway"' in html
    assert not ProviderKey.objects.exists()
    assert "pictai_wrong_key_123456" not in html
    assert post_key(as_admin, key="pictai_wrong_key_123456", action="save_anyway").status_code == 204
    assert keys.stored("pictory") == "pictai_wrong_key_123456"


def test_a_provider_that_cannot_be_reached_is_not_called_a_refusal(as_admin, settings):
    settings.PICTORY_API_KEY = ""
    settings.PICTORY_API_BASE_URL = f"http://127.0.0.1:{free_port()}/pictoryapis"
    settings.PICTORY_TIMEOUT_SECONDS = 1
    html = post_key(as_admin).content.decode()
    assert "Could not reach Pictory to test the key" in html
    assert "refused" not in html and not ProviderKey.objects.exists()


def test_openrouter_test_reads_the_key_and_says_the_credit_left(as_admin, openrouter):
    html = post_key(as_admin, "openrouter", openrouter.key, action="test").content.decode()
    assert "OpenRouter accepted the key: 7.5 USD of credit left of its 10 USD limit." in html
    assert [r.path for r in openrouter.requests] == ["/api/v1/key"]
    assert openrouter.requests[0].headers["authorization"] == f"Bearer {openrouter.key}"
    openrouter.key_info.update(limit=None, limit_remaining=None, usage=1.25)
    html = post_key(as_admin, "openrouter", openrouter.key, action="test").content.decode()
    assert "It has no spending limit; 1.25 USD used so far." in html
    # The label OpenRouter returns is a masked form of the key: it is not shown.
    assert openrouter.key_info["label"] not in html


def test_openrouter_refuses_a_wrong_key(as_admin, openrouter):
    html = post_key(as_admin, "openrouter", "sk-or-v1-wrong", action="test").content.decode()
    assert "OpenRouter refused this key" in html


def test_a_trial_key_is_used_by_the_test_call_only(as_admin, pictory, settings):
    settings.PICTORY_API_KEY = "pictai_from_the_environment"
    provider = get_provider("pictory")
    with provider.trying_key(PASTED):
        assert provider.api_key == PASTED
    assert provider.api_key == "pictai_from_the_environment"


# --- Precedence and freshness -----------------------------------------------------------------


def test_a_saved_key_is_used_at_once_and_removing_it_turns_the_provider_off(pictory):
    provider = get_provider_class("pictory")()
    assert provider.api_key == "" and not provider.is_enabled()
    keys.save("pictory", PASTED)
    assert provider.api_key == PASTED and provider.key_source == "studio"
    keys.save("pictory", "pictai_replaced_000000")
    assert provider.api_key == "pictai_replaced_000000"
    keys.remove("pictory")
    assert provider.api_key == "" and not provider.is_enabled()


def test_a_key_another_process_saves_is_seen_on_the_next_read(pictory):
    provider = get_provider_class("pictory")()
    keys.save("pictory", PASTED)
    assert provider.api_key == PASTED
    # What the web process does while this one (a worker) keeps its cache: a new row value.
    ProviderKey.objects.filter(provider="pictory").update(encrypted=keys.encrypt("pictai_from_the_web"))
    assert provider.api_key == "pictai_from_the_web"


def get_provider_class(name):
    return next(p for p in HostedProvider.__subclasses__() if p.__module__.endswith(name))


def test_the_environment_wins_over_a_saved_key_and_the_page_says_so(as_admin, pictory, settings):
    keys.save("pictory", PASTED)
    settings.PICTORY_API_KEY = "pictai_environment_key_9999"
    provider = get_provider("pictory")
    assert provider.api_key == "pictai_environment_key_9999" and provider.key_source == "environment"
    html = as_admin.get(reverse("providers")).content.decode()
    assert "from the studio's environment (ending 9999): it wins over a key pasted here." in html
    assert "A key saved here (ending 3210) is waiting." in html
    assert "pictai_environment_key_9999" not in html and PASTED not in html


def test_reading_a_key_is_one_query_and_decrypts_only_after_a_change(pictory, monkeypatch):
    keys.save("pictory", PASTED)
    provider = get_provider_class("pictory")()
    decrypted = []
    real = keys.decrypt
    monkeypatch.setattr(keys, "decrypt", lambda token: decrypted.append(token) or real(token))
    keys._cache.clear()
    with CaptureQueriesContext(connection) as queries:
        for _ in range(5):
            assert provider.api_key == PASTED
    assert len(queries) == 5 and len(decrypted) == 1
    keys.save("pictory", "pictai_changed_0000000")
    assert provider.api_key == "pictai_changed_0000000" and len(decrypted) == 2


# --- Who sees what ---------------------------------------------------------------------------


def test_a_non_admin_posting_to_the_keys_form_gets_403_and_nothing_changes(signed_in, pictory):
    keys.save("pictory", PASTED)
    for action in ("save", "save_anyway", "test", "remove"):
        response = post_key(signed_in, key="pictai_intruder_key_000", action=action, htmx=False)
        assert response.status_code == 403
        page = response.content.decode()
        assert "Only an admin can change provider keys. Nothing was changed." in page
        assert "pictai_intruder_key_000" not in page and "studio/studio.css" in page
    assert keys.stored("pictory") == PASTED
    assert pictory.requests == []


def test_non_admins_see_which_providers_are_connected_never_a_key(signed_in, pictory):
    keys.save("pictory", PASTED)
    html = signed_in.get(reverse("providers")).content.decode()
    section = html[html.index('id="provider-pictory"') :]
    assert "Connected" in section[:400]
    assert "API key" not in html and "(ending" not in html and PASTED[-4:] not in html
    assert 'name="key"' not in html


def test_an_admin_sees_only_the_last_four_characters_of_a_saved_key_and_who_saved_it(as_admin, pictory):
    admin = get_user_model().objects.get(is_superuser=True)
    keys.save("pictory", PASTED, admin)
    html = as_admin.get(reverse("providers")).content.decode()
    today = date_format(timezone.localdate(), "j F Y")
    assert f"with the key pasted here (ending 3210), saved by {admin.get_username()} on {today}." in html
    assert PASTED not in html and PASTED[:-4] not in html
    assert 'type="password"' in html and 'value="' + PASTED not in html


def test_the_key_never_reaches_a_page_or_a_log(as_admin, pictory, caplog):
    caplog.set_level(logging.DEBUG)
    pages = [post_key(as_admin, action="test"), post_key(as_admin, key="pictai_wrong_000000")]
    pages += [post_key(as_admin, htmx=False), post_key(as_admin, action="save_anyway", htmx=False)]
    pages += [as_admin.get(reverse("providers")), as_admin.get(reverse("home"))]
    for response in pages:
        body = response.content.decode()
        assert PASTED not in body and "pictai_wrong_000000" not in body
        assert PASTED not in str(response.headers)
    assert PASTED not in caplog.text and "pictai_wrong_000000" not in caplog.text


# --- What a key turns on and off ----------------------------------------------------------------


def model_choices(client) -> str:
    """The generate form's Model select, as HTML."""
    html = client.get(reverse("home")).content.decode()
    start = html.index('<select name="model" id="id_model"')
    return html[start : html.index("</select>", start)]


def test_pasting_a_key_offers_its_models_at_once_and_removing_it_hides_them(as_admin, pictory, user):
    assert "pictory:veo3.1" not in model_choices(as_admin)
    assert post_key(as_admin).status_code == 204
    assert 'value="pictory:veo3.1"' in model_choices(as_admin)
    made = pictory_clip(user, Clip.Status.READY, "A kept clip")
    response = post_key(as_admin, action="remove", htmx=False)
    assert response.status_code == 302
    assert "pictory:veo3.1" not in model_choices(as_admin)
    html = as_admin.get(reverse("home")).content.decode()
    assert f'id="clip-{made.pk}"' in html and "A kept clip" in html
    assert as_admin.get(reverse("clip_detail", args=[made.pk])).status_code == 200


def test_removing_a_key_that_running_clips_need_asks_first(as_admin, pictory, user):
    keys.save("pictory", PASTED)
    pictory_clip(user, Clip.Status.RUNNING, "Still generating")
    html = post_key(as_admin, action="remove").content.decode()
    assert "1 clip from Pictory AI Studio is still generating" in html
    assert keys.stored("pictory") == PASTED
    assert post_key(as_admin, action="remove", confirm="1").status_code == 204
    assert keys.stored("pictory") == ""


def test_a_worker_submits_with_the_key_pasted_in_the_web_process(
    as_admin, pictory, enqueued, django_capture_on_commit_callbacks
):
    assert post_key(as_admin).status_code == 204
    with django_capture_on_commit_callbacks(execute=True):
        response = as_admin.post(
            reverse("generate"),
            {
                "model": "pictory:veo3.1",
                "prompt": "A lighthouse at dusk",
                "aspect_ratio": "16:9",
                "duration": "4",
            },
        )
    assert response.status_code == 302
    run_enqueued(enqueued)
    assert [r.headers["authorization"] for r in pictory.creates()] == [PASTED]
