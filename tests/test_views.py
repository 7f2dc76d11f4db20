"""Pages and fragments: accounts, the gallery, cards, continue, the clip page, files."""

import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile

from studio import jobs
from studio.models import Asset, Clip

from .test_jobs import make_due, new_clip
from .worker import poll_clip

pytestmark = pytest.mark.django_db


def ready_clip(user, **fields):
    clip = new_clip(user, **fields)
    jobs.submit_clip(clip.pk)
    make_due(clip)
    poll_clip(clip)
    jobs.finish_clip(clip.pk)
    jobs.measure_clip(clip.pk)  # the worker's next task: the seam figures and drift
    clip.refresh_from_db()
    assert clip.is_ready, clip.error
    return clip


def test_first_visit_with_no_user_offers_to_create_the_account(client):
    response = client.get("/", follow=True)
    assert response.redirect_chain[-1][0] == "/setup/"
    assert "Create your account" in response.content.decode()


def test_first_account_becomes_admin_and_is_signed_in(client):
    response = client.post(
        "/setup/", {"username": "ana", "password1": "fox-in-the-snow-42", "password2": "fox-in-the-snow-42"}
    )
    assert response.status_code == 302 and response.url == "/"
    user = get_user_model().objects.get()
    assert user.is_superuser and user.is_staff
    assert client.get("/").status_code == 200


def test_setup_is_closed_once_a_user_exists(client, user):
    assert client.get("/setup/").url == "/accounts/login/"
    client.post(
        "/setup/",
        {"username": "mallory", "password1": "fox-in-the-snow-42", "password2": "fox-in-the-snow-42"},
    )
    assert get_user_model().objects.count() == 1


def test_sign_in_is_required_once_a_user_exists(client, user):
    response = client.get("/")
    assert response.status_code == 302 and response.url.startswith("/accounts/login/")
    assert "Sign in" in client.get(response.url).content.decode()


def test_createsuperuser_noinput_works_with_django_env_vars(monkeypatch):
    from django.core.management import call_command

    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "fox-in-the-snow-42")
    call_command("createsuperuser", "--noinput", "--username", "admin", "--email", "a@example.com")
    assert get_user_model().objects.get(username="admin").is_superuser


def test_empty_gallery_says_what_to_do(signed_in):
    html = signed_in.get("/").content.decode()
    assert "No clips yet" in html
    for label in ("Model", "Prompt", "Aspect ratio", "Duration", "First frame", "Generate"):
        assert label in html


def test_unfinished_card_polls_itself_and_finished_card_does_not(signed_in, user, enqueued):
    clip = new_clip(user)
    html = signed_in.get(f"/clips/{clip.pk}/card/", HTTP_HX_REQUEST="true").content.decode()
    assert 'hx-trigger="every 2s"' in html and "Queued" in html
    # The page's title counts what is generating; a poll does not count it again.
    assert "<title>" not in html
    ready = ready_clip(user)
    html = signed_in.get(f"/clips/{ready.pk}/card/", HTTP_HX_REQUEST="true").content.decode()
    assert "hx-trigger" not in html
    assert "Ready" in html and "Continue from last frame" in html
    assert (
        f'poster="/clips/{ready.pk}/thumbnail.jpg"' in html and f'src="/clips/{ready.pk}/video.mp4"' in html
    )


def test_failed_card_says_why(signed_in, user, enqueued):
    clip = new_clip(user)
    clip.fail("The provider refused the prompt.")
    html = signed_in.get(f"/clips/{clip.pk}/card/").content.decode()
    assert "Failed" in html and "The provider refused the prompt." in html
    assert "hx-trigger" not in html


def test_continue_opens_the_form_with_the_last_frame_model_and_ratio(signed_in, user, enqueued):
    parent = ready_clip(user, model="simulator:motion", aspect_ratio="4:3", duration=5)
    html = signed_in.get(f"/clips/{parent.pk}/continue/").content.decode()
    assert f"Continue clip #{parent.pk}" in html
    assert 'value="simulator:motion" selected' in html
    assert 'value="4:3" selected' in html
    assert f'name="first_frame_asset" value="{parent.last_frame_id}"' in html
    assert f'name="parent" value="{parent.pk}"' in html


def test_continue_posts_a_child_that_records_its_parent(signed_in, user, enqueued):
    parent = ready_clip(user)
    response = signed_in.post(
        "/generate/",
        {
            "model": "simulator:cinema",
            "prompt": "The next moment",
            "aspect_ratio": "16:9",
            "duration": "4",
            "parent": parent.pk,
            "first_frame_asset": parent.last_frame_id,
        },
    )
    assert response.status_code == 302
    child = Clip.objects.exclude(pk=parent.pk).get()
    assert child.parent == parent and child.first_frame_id == parent.last_frame_id


def test_continue_from_an_unfinished_clip_is_refused(signed_in, user, enqueued):
    clip = new_clip(user)
    response = signed_in.get(f"/clips/{clip.pk}/continue/")
    assert response.status_code == 302 and response.url == f"/clips/{clip.pk}/"


def test_clip_page_shows_the_chain_from_root_to_clip(signed_in, user, enqueued):
    root = ready_clip(user, prompt="Root shot of the story")
    middle = ready_clip(user, parent=root, first_frame=root.last_frame, prompt="Middle shot of the story")
    leaf = new_clip(user, parent=middle, first_frame=middle.last_frame, prompt="Last shot of the story")
    html = signed_in.get(f"/clips/{leaf.pk}/").content.decode()
    strip = html[html.index('class="chain-strip"') :]
    positions = [strip.index(f"#{c.pk} · ") for c in (root, middle, leaf)]
    assert positions == sorted(positions)
    assert "3 clips" in html


def test_other_users_clips_and_files_are_404(client, user, other_user, enqueued):
    clip = ready_clip(user)
    client.force_login(other_user)
    for url in (
        f"/clips/{clip.pk}/",
        f"/clips/{clip.pk}/card/",
        f"/clips/{clip.pk}/continue/",
        f"/clips/{clip.pk}/video.mp4",
        f"/clips/{clip.pk}/thumbnail.jpg",
        f"/assets/{clip.last_frame_id}/",
    ):
        assert client.get(url).status_code == 404, url
    assert f"clip-{clip.pk}" not in client.get("/").content.decode()


def test_files_need_a_signed_in_user(client, user, enqueued):
    clip = ready_clip(user)
    response = client.get(f"/clips/{clip.pk}/video.mp4")
    assert response.status_code == 302


def test_video_is_served_whole_and_by_range(signed_in, user, enqueued):
    clip = ready_clip(user)
    whole = b"".join(signed_in.get(f"/clips/{clip.pk}/video.mp4").streaming_content)
    assert whole == clip.video.read()
    part = signed_in.get(f"/clips/{clip.pk}/video.mp4", HTTP_RANGE="bytes=100-199")
    assert part.status_code == 206
    assert part["Content-Range"] == f"bytes 100-199/{len(whole)}"
    assert b"".join(part.streaming_content) == whole[100:200]
    tail = signed_in.get(f"/clips/{clip.pk}/video.mp4", HTTP_RANGE="bytes=-10")
    assert b"".join(tail.streaming_content) == whole[-10:]
    assert (
        signed_in.get(f"/clips/{clip.pk}/video.mp4", HTTP_RANGE=f"bytes={len(whole) + 5}-").status_code == 416
    )


@pytest.mark.parametrize(
    "header, status",
    [
        ("bytes=" + "9" * 5000 + "-", 416),  # beyond any file
        ("bytes=0-" + "9" * 5000, 206),  # to the end
        ("bytes=-" + "9" * 5000, 206),  # the whole file, as a suffix
        ("bytes=١-٢", 200),  # not digits a Range may use: the whole file
    ],
)
def test_a_range_of_any_length_or_digits_is_answered_never_a_server_error(
    signed_in, user, enqueued, header, status
):
    clip = ready_clip(user)
    response = signed_in.get(f"/clips/{clip.pk}/video.mp4", HTTP_RANGE=header)
    assert response.status_code == status
    if status == 206:
        assert b"".join(response.streaming_content) == clip.video.read()


def test_paths_with_ids_too_long_for_a_database_integer_are_not_found(signed_in, user):
    assert signed_in.get("/clips/" + "9" * 30 + "/card/").status_code == 404
    assert signed_in.get("/exports/" + "9" * 19 + "/").status_code == 404
    # The chain is read with raw SQL, where SQLite raises OverflowError on such a number.
    assert signed_in.get("/clips/" + "9" * 19 + "/chain/").status_code == 404


def test_download_link_names_the_file(signed_in, user, enqueued):
    clip = ready_clip(user)
    response = signed_in.get(f"/clips/{clip.pk}/video.mp4?download=1")
    assert f'filename="lastframe-clip-{clip.pk}.mp4"' in response["Content-Disposition"]


def test_published_file_needs_its_exact_token(client, user):
    asset = Asset(owner=user)
    asset.file.save("image.png", ContentFile(b"\x89PNG fake"), save=True)
    assert client.get(f"/p/{asset.public_token}/image.png").status_code == 200
    assert client.get(f"/p/{asset.public_token[:-1]}x/image.png").status_code == 404
    assert client.get(f"/p/{asset.public_token}/other.png").status_code == 404


def test_gallery_pages_by_24(signed_in, user):
    for n in range(30):
        Clip.objects.create(
            owner=user,
            provider="simulator",
            model_key="cinema",
            model_label="Sim",
            prompt=f"Clip number {n}",
            status=Clip.Status.FAILED,
        )
    html = signed_in.get("/").content.decode()
    assert html.count('class="card ') == 24 and 'hx-trigger="revealed"' in html
    oldest_shown = Clip.objects.order_by("-pk")[23].pk
    more = signed_in.get(f"/?before={oldest_shown}").content.decode()
    assert more.count('class="card ') == 6 and "revealed" not in more
    # Digits str.isdigit takes but int() does not ("²"), or other scripts' digits: the first
    # page, as for any value that is not an id.
    for before in ("²", "١٢", "9" * 5000, "-3"):
        response = signed_in.get("/", {"before": before})
        assert response.status_code == 200 and response.content.decode().count('class="card ') == 24


def test_finished_and_unfinished_states_name_every_state_once():
    assert sorted(Clip.FINAL_STATES + Clip.UNFINISHED_STATES) == sorted(Clip.Status.values)


def test_the_model_filter_lists_each_model_of_the_creator_once(signed_in, user, other_user):
    for owner, provider, key, label in [
        (user, "simulator", "motion", "Sim Motion"),
        (user, "simulator", "cinema", "Sim Cinema"),
        (user, "simulator", "motion", "Sim Motion"),
        (user, "pictory", "veo3.1", "Veo 3.1"),
        (other_user, "pictory", "pixverse5.5", "PixVerse"),
    ]:
        Clip.objects.create(
            owner=owner, provider=provider, model_key=key, model_label=label, prompt="A prompt"
        )
    assert Clip.objects.models_used(user.pk) == [
        ("pictory", "veo3.1", "Veo 3.1"),
        ("simulator", "cinema", "Sim Cinema"),
        ("simulator", "motion", "Sim Motion"),
    ]
    assert Clip.objects.models_used(other_user.pk + 100) == []
    html = signed_in.get("/").content.decode()
    assert 'value="simulator:motion"' in html and "pixverse" not in html


def test_a_cards_poll_reads_only_the_user_and_the_clip(signed_in, user, settings):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    clip = Clip.objects.create(
        owner=user,
        provider="simulator",
        model_key="cinema",
        model_label="Sim",
        prompt="A prompt",
        status=Clip.Status.RUNNING,
    )
    url = f"/clips/{clip.pk}/card/"
    signed_in.get(url, HTTP_HX_REQUEST="true")  # the first poll reads the model's estimate
    with CaptureQueriesContext(connection) as queries:
        response = signed_in.get(url, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and "<title>" not in response.content.decode()
    # The session comes from the cache (with SQLite or Redis; PostgreSQL alone keeps it in
    # the database); no "generating" count while the clip is unfinished.
    tables = [q["sql"].split(" FROM ")[1].split()[0] for q in queries.captured_queries]
    if settings.SESSION_ENGINE.endswith("cached_db"):
        assert tables == ['"auth_user"', '"studio_clip"'], tables
    else:
        assert tables == ['"django_session"', '"auth_user"', '"studio_clip"'], tables
    # Nor does the poll that finds it finished (the page takes one off the title itself).
    Clip.objects.filter(pk=clip.pk).update(status=Clip.Status.READY)
    with CaptureQueriesContext(connection) as queries:
        html = signed_in.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert len(queries.captured_queries) == len(tables) and "Continue from last frame" in html


def test_a_next_that_is_not_a_path_of_this_site_goes_home(signed_in, user, enqueued):
    clip = Clip.objects.create(
        owner=user, provider="simulator", model_key="cinema", model_label="Sim", prompt="A prompt",
        status=Clip.Status.FAILED,
    )  # fmt: skip
    # redirect() reads "0" or "home" as the name of a view (found by tests/test_fuzz.py).
    for target in ("0", "home", "https://elsewhere.example/", "//elsewhere.example/"):
        Clip.objects.filter(pk=clip.pk).update(status=Clip.Status.FAILED)
        response = signed_in.post(f"/clips/{clip.pk}/retry/", {"next": target})
        assert response.status_code == 302 and response.url == "/", target
