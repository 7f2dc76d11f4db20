"""A creator always knows what is happening: feedback after Generate, time left, place in
line, cancel, the form that keeps what it can, start modes that cannot work, pages that
screen readers can follow, and the error pages."""

import re
from datetime import timedelta
from decimal import Decimal
from html import unescape
from html.parser import HTMLParser

import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone
from django.views.defaults import server_error

from studio import jobs, progress
from studio.forms import GenerateForm, options_initial
from studio.models import Asset, Clip
from studio.providers import ModelSpec, all_providers, get_provider
from tests.conftest import run_enqueued
from tests.fakes.pictory import FakePictory
from tests.images import png_bytes
from tests.test_jobs import make_due, new_clip

from .worker import poll_clip

pytestmark = pytest.mark.django_db

CINEMA, MOTION = "simulator:cinema", "simulator:motion"


@pytest.fixture(autouse=True)
def one_pass_sweeps(settings):
    settings.POLL_SWEEP_SECONDS = 0  # a sweep polls once: tests poll by hand


def a_clip(user, status, model_key="cinema", provider="simulator", **fields):
    return Clip.objects.create(
        owner=user, provider=provider, model_key=model_key, model_label=model_key, status=status, **fields
    )


def finished_clip(user, seconds, model_key="cinema", provider="simulator", ago=0):
    """A ready clip that took `seconds` from acceptance to ready, finished `ago` s ago."""
    finished = timezone.now() - timedelta(seconds=ago)
    started = finished - timedelta(seconds=seconds)
    return a_clip(user, Clip.Status.READY, model_key, provider, submitted_at=started, finished_at=finished)


def running_clip(user, elapsed, model_key="cinema", provider="simulator"):
    started = timezone.now() - timedelta(seconds=elapsed)
    return a_clip(user, Clip.Status.RUNNING, model_key, provider, remote_id="job", submitted_at=started)


def card(client, clip) -> str:
    html = client.get(reverse("clip_card", args=[clip.pk]), HTTP_HX_REQUEST="true").content.decode()
    return re.sub(r"\s+", " ", unescape(html))


# --- Time ------------------------------------------------------------------------------------


def test_the_estimate_is_the_median_of_the_last_finished_clips_of_that_model(user):
    for n, seconds in enumerate([30, 40, 200]):
        finished_clip(user, seconds, ago=n)
    finished_clip(user, 5, model_key="motion")  # another model does not count
    found = progress.progress(running_clip(user, elapsed=10))
    assert found.expected == 40 and found.elapsed == pytest.approx(10, abs=1)
    assert found.left_text == "about 30 s left"
    assert found.basis == "the middle of the last 3 clips of this model made here"


def test_only_the_last_ten_finished_clips_count(user):
    for n in range(10):
        finished_clip(user, 60, ago=n)
    for n in range(5):
        finished_clip(user, 900, ago=100 + n)  # older and slow: left out
    assert Clip.objects.typical_generation_seconds("simulator", "cinema") == (60, 10)


def test_a_clip_still_being_made_or_failed_does_not_count(user):
    finished_clip(user, 50)
    running_clip(user, 500)
    failed = finished_clip(user, 999)
    Clip.objects.filter(pk=failed.pk).update(status=Clip.Status.FAILED)
    assert Clip.objects.typical_generation_seconds("simulator", "cinema") == (50, 1)


def test_until_a_clip_of_the_model_has_finished_the_providers_typical_time_is_given_as_such(user, settings):
    settings.SIMULATOR_DELAY_SECONDS = 4
    found = progress.progress(running_clip(user, elapsed=1))
    assert found.expected == 6.0  # the simulator's pause, then rendering and copying
    assert (
        found.basis == "the offline simulator's typical time, as no clip of this model has finished here yet"
    )
    assert found.left_text == "about 5 s left"


def test_past_the_estimate_the_card_says_it_is_taking_longer_than_usual(user):
    finished_clip(user, 120)
    found = progress.progress(running_clip(user, elapsed=300))
    assert found.left_text == "taking longer than usual (usually about 2 min)"


@pytest.mark.parametrize(
    "seconds, words",
    [
        (3, "5 s"),
        (12, "10 s"),
        (52, "50 s"),
        (70, "1 min"),
        (170, "3 min"),
        (1500, "25 min"),
        (5400, "1.5 h"),
    ],
)
def test_estimates_are_said_as_people_say_them(seconds, words):
    assert progress.spoken(seconds) == words


def test_elapsed_time_reads_like_a_clock():
    assert [progress.clock(s) for s in (0, 9, 65, 600, 3725)] == ["0:00", "0:09", "1:05", "10:00", "1:02:05"]


def test_a_generating_card_shows_the_elapsed_time_the_estimate_and_its_basis(signed_in, user):
    for n, seconds in enumerate([80, 90]):
        finished_clip(user, seconds, ago=n)
    html = card(signed_in, running_clip(user, elapsed=25))
    assert 'Generating for <span class="eta-clock">0:25</span> · about 1 min left' in html
    assert "Estimate: the middle of the last 2 clips of this model made here." in html


def test_a_queued_card_shows_its_place_in_line_among_every_creators_clips(
    signed_in, user, other_user, enqueued
):
    first = new_clip(user)
    new_clip(other_user)
    third = new_clip(user)
    assert "2 clips ahead" in card(signed_in, third)
    assert "Next in line" in card(signed_in, first)
    Clip.objects.filter(pk=first.pk).update(status=Clip.Status.RUNNING, submitted_at=timezone.now())
    assert "1 clip ahead" in card(signed_in, third)


def test_a_queued_card_waiting_to_retry_says_why(signed_in, user, enqueued):
    clip = new_clip(user)
    Clip.objects.filter(pk=clip.pk).update(error="Waiting to retry: Pictory asked us to slow down (429).")
    assert "Next in line · Waiting to retry: Pictory asked us to slow down (429)." in card(signed_in, clip)


def test_the_gallery_reads_each_estimate_once_however_many_cards_share_it(signed_in, user):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    finished_clip(user, 60)

    def estimate_reads():
        with CaptureQueriesContext(connection) as queries:
            assert signed_in.get(reverse("home")).status_code == 200
        return sum('"submitted_at", "studio_clip"."finished_at"' in q["sql"] for q in queries)

    running_clip(user, 5)
    assert estimate_reads() == 1
    for _ in range(6):
        running_clip(user, 5)
    assert estimate_reads() == 0  # kept in the cache from the page before


def test_a_clip_that_becomes_ready_moves_the_estimate_at_once(
    signed_in, user, enqueued, django_capture_on_commit_callbacks
):
    from .test_views import ready_clip

    finished_clip(user, 600)
    running = running_clip(user, 5)
    assert "about 10 min left" in card(signed_in, running)
    with django_capture_on_commit_callbacks(execute=True):
        ready_clip(user)  # through the worker's finish, in well under a second
    assert "about 10 min left" not in card(signed_in, running)


# --- Cancel ----------------------------------------------------------------------------------


def test_a_clip_not_sent_yet_is_cancelled_at_no_cost_and_never_sent(signed_in, user, enqueued, settings):
    clip = new_clip(user)
    html = card(signed_in, clip)
    assert "Cancel" in html and "Not sent yet: cancelling costs nothing." in html
    response = signed_in.post(reverse("cancel_clip", args=[clip.pk]), HTTP_HX_REQUEST="true")
    html = re.sub(r"\s+", " ", response.content.decode())
    clip.refresh_from_db()
    assert clip.status == Clip.Status.CANCELLED and clip.cost_actual == Decimal(0)
    assert "Cancelled before it was sent: nothing was spent." in html and 'data-finished="true"' in html
    assert clip.cost_text == "Free"
    jobs.submit_clip(clip.pk)  # the task queued before the cancel runs anyway
    clip.refresh_from_db()
    assert clip.status == Clip.Status.CANCELLED and clip.remote_id == ""
    assert not (settings.MEDIA_ROOT / "simulator").exists()


def test_a_clip_the_worker_is_sending_is_not_cancelled(user, enqueued):
    clip = new_clip(user)
    stale = Clip.objects.get(pk=clip.pk)
    Clip.objects.filter(pk=clip.pk).update(status=Clip.Status.SUBMITTING)  # the worker claimed it
    cancelled, message = jobs.cancel_clip(stale)
    assert (
        not cancelled and "is being sent to" in message and "can no longer be cancelled for free" in message
    )
    assert Clip.objects.get(pk=clip.pk).status == Clip.Status.SUBMITTING


def test_a_provider_that_can_stop_a_job_has_it_stopped_there(signed_in, user, enqueued, settings):
    clip = new_clip(user)
    jobs.submit_clip(clip.pk)
    settings.SIMULATOR_DELAY_SECONDS = 60  # the job is still "generating" at the simulator
    clip.refresh_from_db()
    assert clip.status == Clip.Status.RUNNING
    assert 'aria-label="Cancel clip' in card(signed_in, clip)
    response = signed_in.post(reverse("cancel_clip", args=[clip.pk]))
    assert response.status_code == 302 and response.url == f"/#clip-{clip.pk}"
    clip.refresh_from_db()
    assert clip.status == Clip.Status.CANCELLED and clip.cost_actual is None
    assert clip.error == "Cancelled at the offline simulator while it was being made."
    assert get_provider("simulator").poll(clip.remote_id).error == "The job was cancelled."
    make_due(clip)
    poll_clip(clip)
    assert Clip.objects.get(pk=clip.pk).status == Clip.Status.CANCELLED


def test_a_clip_that_finished_before_the_cancel_keeps_its_result(user, enqueued, settings):
    settings.SIMULATOR_DELAY_SECONDS = 0
    clip = new_clip(user)
    jobs.submit_clip(clip.pk)
    stale = Clip.objects.get(pk=clip.pk)  # what the card showed: running
    make_due(clip)
    poll_clip(clip)  # meanwhile the provider finished it
    cancelled, message = jobs.cancel_clip(stale)
    assert not cancelled and "already made this clip" in message
    jobs.finish_clip(clip.pk)
    assert Clip.objects.get(pk=clip.pk).status == Clip.Status.READY


def test_cancelling_twice_changes_nothing_the_second_time(signed_in, user, enqueued):
    clip = new_clip(user)
    signed_in.post(reverse("cancel_clip", args=[clip.pk]))
    before = Clip.objects.get(pk=clip.pk)
    response = signed_in.post(reverse("cancel_clip", args=[clip.pk]), HTTP_HX_REQUEST="true")
    assert "there is nothing left to cancel" in response.content.decode()
    assert Clip.objects.get(pk=clip.pk).finished_at == before.finished_at


def test_another_creators_clip_cannot_be_cancelled(signed_in, other_user, enqueued):
    theirs = new_clip(other_user)
    assert signed_in.post(reverse("cancel_clip", args=[theirs.pk])).status_code == 404
    assert Clip.objects.get(pk=theirs.pk).status == Clip.Status.QUEUED


def test_a_cancelled_clip_can_be_sent_after_all(signed_in, user, enqueued):
    clip = new_clip(user)
    jobs.cancel_clip(clip)
    assert "Send it after all" in card(signed_in, clip)
    signed_in.post(reverse("retry_clip", args=[clip.pk]))
    clip.refresh_from_db()
    assert clip.status == Clip.Status.QUEUED and clip.cost_actual is None and clip.error == ""


def test_the_hosted_providers_document_no_cancel_and_their_cards_say_so(signed_in, user, settings):
    by_name = {p.name: p for p in all_providers()}
    assert by_name["simulator"].can_cancel
    assert not by_name["pictory"].can_cancel and not by_name["openrouter"].can_cancel
    fake = FakePictory().start()
    try:
        settings.PICTORY_API_KEY, settings.PICTORY_API_BASE_URL = fake.key, fake.base_url
        clip = running_clip(user, elapsed=30, model_key="veo3.1", provider="pictory")
        html = card(signed_in, clip)
        assert 'aria-label="Cancel clip' not in html
        assert (
            "Pictory has it already and offers no way to stop a clip once it has started: it will finish, and be billed."
            in html
        )
        assert "Estimate: Pictory's typical time, as no clip of this model has finished here yet." in html
        response = signed_in.post(reverse("cancel_clip", args=[clip.pk]), HTTP_HX_REQUEST="true")
        assert "it will finish, and be billed" in response.content.decode()
        assert Clip.objects.get(pk=clip.pk).status == Clip.Status.RUNNING
        assert fake.requests == []
    finally:
        fake.stop()


def test_a_chain_with_a_cancelled_clip_says_why_it_cannot_be_joined(signed_in, user, enqueued):
    clip = new_clip(user)
    jobs.cancel_clip(clip)
    html = signed_in.get(reverse("chain_view", args=[clip.pk])).content.decode()
    assert f"Clip #{clip.pk} was cancelled: generate it again or choose another take" in html


def test_the_gallery_filters_cancelled_clips(signed_in, user, enqueued):
    kept, gone = new_clip(user, prompt="Kept going"), new_clip(user, prompt="Stopped early")
    jobs.cancel_clip(gone)
    html = signed_in.get(reverse("home"), {"status": "cancelled"}).content.decode()
    assert "Stopped early" in html and "Kept going" not in html
    assert f'id="clip-{kept.pk}"' in signed_in.get(reverse("home"), {"status": "generating"}).content.decode()


# --- After Generate ----------------------------------------------------------------------------


GOOD = {
    "model": CINEMA,
    "prompt": "A lantern drifts over a dark lake",
    "aspect_ratio": "9:16",
    "duration": "6",
}


def test_after_generate_a_message_beside_the_button_links_to_the_new_card_and_the_form_is_kept(
    signed_in, enqueued
):
    html = signed_in.post(reverse("generate"), GOOD, HTTP_HX_REQUEST="true").content.decode()
    clip = Clip.objects.get()
    button = html.index('id="generate-button"')
    note = html.index(f'data-new-clip="{clip.pk}"')
    assert button < note < html.index("</form>")
    assert f'<a href="#clip-{clip.pk}">Clip #{clip.pk}</a> queued' in html
    assert "A lantern drifts over a dark lake</textarea>" in html
    assert 'value="9:16" selected' in html and '<option value="6" selected>' in html
    assert 'data-clear="#id_prompt"' in html
    assert f'hx-swap-oob="afterbegin:#gallery"><article class="card card--queued" id="clip-{clip.pk}"' in html
    # No out-of-band swap that may find nothing to swap (a console error on every Generate).
    assert "gallery-empty" not in html


def test_without_javascript_generate_lands_on_the_new_card_with_the_prompt_kept_once(signed_in, enqueued):
    response = signed_in.post(reverse("generate"), GOOD)
    clip = Clip.objects.get()
    assert response.status_code == 302 and response.url == f"/#clip-{clip.pk}"
    html = signed_in.get(response.url).content.decode()
    assert f"Clip #{clip.pk} queued." in html
    assert "A lantern drifts over a dark lake</textarea>" in html and 'value="9:16" selected' in html
    assert "A lantern drifts over a dark lake</textarea>" not in signed_in.get("/").content.decode()


# --- The form keeps what it can -------------------------------------------------------------


SHAPES = ModelSpec(
    provider="simulator",
    key="shapes",
    label="Shapes",
    aspect_ratios=("16:9", "9:16"),
    durations=(4, 6, 8),
    resolutions=("720p", "1080p"),
)


@pytest.mark.parametrize(
    "before, after, note",
    [
        ({"duration": "10"}, {"duration": 8}, "Duration 10 s → 8 s, the nearest this model makes."),
        ({"duration": "5"}, {"duration": 4}, "Duration 5 s → 4 s, the nearest this model makes."),
        (
            {"aspect_ratio": "4:3"},
            {"aspect_ratio": "16:9"},
            "Aspect ratio 4:3 → 16:9, the closest shape this model makes.",
        ),
        (
            {"aspect_ratio": "3:4"},
            {"aspect_ratio": "9:16"},
            "Aspect ratio 3:4 → 9:16, the closest shape this model makes.",
        ),
        (
            {"aspect_ratio": "1:1"},
            {"aspect_ratio": "16:9"},
            "Aspect ratio 1:1 → 16:9, the closest shape this model makes.",
        ),
        (
            {"resolution": "768p"},
            {"resolution": "720p"},
            "Resolution 768p → 720p, the nearest this model makes.",
        ),
        (
            {"resolution": "4K"},
            {"resolution": "1080p"},
            "Resolution 4K → 1080p, the nearest this model makes.",
        ),
    ],
)
def test_switching_model_keeps_the_nearest_value_and_says_what_changed(before, after, note):
    changes = []
    initial = options_initial(SHAPES, {"prompt": "kept", **before}, changes)
    assert {k: initial[k] for k in after} == after and initial["prompt"] == "kept"
    assert changes == [note]


def test_values_the_new_model_also_makes_are_kept_without_a_word():
    changes = []
    initial = options_initial(
        SHAPES, {"aspect_ratio": "9:16", "duration": "6", "resolution": "1080p"}, changes
    )
    assert (initial["aspect_ratio"], initial["duration"], initial["resolution"]) == ("9:16", 6, "1080p")
    assert changes == []


def test_what_the_new_model_cannot_do_at_all_is_said():
    changes = []
    options_initial(SHAPES, {"generate_audio": "on", "start_mode": "reference_images"}, changes)
    assert changes == [
        "This model makes no sound, so there is no audio.",
        "This model cannot start from reference images, so the clip starts from text.",
    ]


def test_the_redrawn_form_shows_what_changed_beside_the_options(signed_in):
    html = signed_in.get(
        reverse("form_options"), {"model": CINEMA, "duration": "10", "aspect_ratio": "16:9", "prompt": "x"}
    ).content.decode()
    assert (
        '<div class="carry-note" role="status"><p>Duration 10 s → 8 s, the nearest this model makes.</p></div>'
        in html
    )
    assert '<option value="8" selected>' in html


# --- Only what can work ----------------------------------------------------------------------


@pytest.fixture
def pictory(settings):
    fake = FakePictory().start()
    settings.PICTORY_API_KEY, settings.PICTORY_API_BASE_URL = fake.key, fake.base_url
    yield fake
    fake.stop()


def test_a_start_mode_this_install_cannot_serve_is_shown_disabled_with_the_reason(signed_in, pictory):
    html = signed_in.get(reverse("form_options"), {"model": "pictory:veo3.1"}).content.decode()
    for value, label in (("first_frame", "First frame"), ("reference_images", "Reference images")):
        assert f'<option value="{value}" disabled>{label} (not available here)</option>' in html
    assert '<option value="text" selected>Text only</option>' in html
    assert 'aria-describedby="id_start_mode_helptext"' in html
    reason = unescape(
        re.search(r'<p class="help unavailable-note" id="id_start_mode_helptext">(.*?)</p>', html).group(1)
    )
    assert "Pictory AI Studio fetches those files from the studio's public web address" in reason
    assert "PUBLIC_BASE_URL" in reason and "start from text" in reason


def test_with_a_public_address_every_start_mode_is_offered(signed_in, pictory, settings):
    settings.PUBLIC_BASE_URL = "https://studio.example.com"
    html = signed_in.get(reverse("form_options"), {"model": "pictory:veo3.1"}).content.decode()
    assert "disabled" not in html and "not available here" not in html


def test_continuing_from_a_fresh_provider_last_frame_needs_no_public_address(user, pictory):
    parent = finished_clip(user, 60, model_key="veo3.1", provider="pictory")
    frame = Asset(owner=user, source=Asset.Source.LAST_FRAME, width=64, height=36)
    frame.file.save("last.png", ContentFile(png_bytes()))
    Clip.objects.filter(pk=parent.pk).update(
        last_frame=frame,
        remote_result={
            "last_frame_url": "https://files.example/last.png",
            "received_at": timezone.now().isoformat(),
        },
    )
    form = GenerateForm(
        user=user, initial={"model": "pictory:veo3.1", "parent": parent.pk, "first_frame_asset": frame.pk}
    )
    assert "first_frame" not in form.unavailable_modes
    assert set(form.unavailable_modes) == {"reference_images", "extend_video"}


def test_a_disabled_mode_sent_anyway_is_refused_beside_its_input(signed_in, pictory):
    response = signed_in.post(
        reverse("generate"),
        {"model": "pictory:veo3.1", "prompt": "A lighthouse at dusk", "start_mode": "first_frame"},
    )
    assert response.status_code == 422
    html = response.content.decode()
    assert 'id="id_first_frame_upload_error"' in html and "PUBLIC_BASE_URL" in html


# --- Screen readers and keyboards --------------------------------------------------------------


class Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.described, self.inline_scripts, self.handlers = [], [], 0, []
        self._script_src = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if attrs.get("aria-describedby"):
            self.described.append((tag, attrs.get("id") or attrs.get("name"), attrs["aria-describedby"]))
        if tag == "script" and not attrs.get("src"):
            self.inline_scripts += 1
        self.handlers += [name for name in attrs if name.startswith(("on", "hx-on"))]


def check_page(html: str) -> Ids:
    found = Ids()
    found.feed(html)
    duplicates = {i for i in found.ids if found.ids.count(i) > 1}
    assert duplicates == set()
    missing = [
        (tag, name, ref) for tag, name, ref in found.described for one in ref.split() if one not in found.ids
    ]
    assert missing == []
    assert found.inline_scripts == 0 and found.handlers == []
    return found


def test_every_aria_describedby_points_at_a_real_id_on_every_page(
    client, signed_in, user, enqueued, settings
):
    settings.PUBLIC_BASE_URL = "https://studio.example.com"
    user.is_superuser = True
    user.save()
    made = new_clip(user)
    jobs.submit_clip(made.pk)
    make_due(made)
    poll_clip(made)
    run_enqueued(enqueued)
    made.refresh_from_db()
    pages = [
        signed_in.get(reverse("home")),
        signed_in.post(reverse("generate"), {"model": CINEMA, "prompt": "ab", "seed": "x", "duration": "99"}),
        signed_in.post(
            reverse("generate"), {"model": CINEMA, "prompt": "A fine prompt", "start_mode": "first_frame"}
        ),
        signed_in.get(
            reverse("form_options"), {"model": MOTION, "duration": "4", "start_mode": "first_frame"}
        ),
        signed_in.get(reverse("clip_detail", args=[made.pk])),
        signed_in.get(reverse("chain_view", args=[made.pk])),
        signed_in.get(reverse("continue_clip", args=[made.pk])),
        signed_in.get(reverse("providers")),
        signed_in.post(reverse("provider_key", args=["pictory"]), {"key": "", "action": "test"}),
        signed_in.get("/no-such-page/"),
    ]
    signed_in.logout()
    pages.append(client.post(reverse("login"), {"username": "ana", "password": "wrong"}))
    get_user_model().objects.all().delete()
    pages.append(client.post(reverse("setup"), {"username": "", "password1": "a", "password2": "b"}))
    described = 0
    for response in pages:
        described += len(check_page(response.content.decode()).described)
    assert described >= 10  # the check above looked at real references


def test_a_form_with_errors_marks_its_fields_invalid(signed_in):
    html = signed_in.post(reverse("generate"), {"model": CINEMA, "prompt": "ab"}).content.decode()
    assert re.search(
        r'<textarea[^>]*aria-invalid="true"[^>]*aria-describedby="id_prompt_helptext id_prompt_error"', html
    )


# --- Polish ------------------------------------------------------------------------------------


def test_a_missing_page_is_in_the_studios_look_with_a_way_back(signed_in):
    response = signed_in.get("/clips/999999/")
    html = response.content.decode()
    assert response.status_code == 404
    assert "studio/studio.css" in html and "This page is not here" in html
    assert '<a class="button button--primary" href="/">Back to your clips</a>' in html


def test_a_server_error_page_is_in_the_studios_look_and_needs_nothing_to_render():
    response = server_error(RequestFactory().get("/"))
    html = response.content.decode()
    assert response.status_code == 500
    assert "studio/studio.css" in html and "Back to your clips" in html and "safe" in html


def test_every_page_has_a_favicon_and_no_inline_script(signed_in):
    html = signed_in.get(reverse("home")).content.decode()
    assert re.search(r'<link rel="icon" type="image/svg\+xml" href="/static/studio/favicon\.svg"', html)
    assert signed_in.get("/static/studio/favicon.svg").status_code == 200
    assert signed_in.get("/static/studio/favicon-ready.svg").status_code == 200
    check_page(html)
