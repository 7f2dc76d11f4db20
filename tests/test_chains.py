"""Chains a creator can shape: sequences, takes, joining a chain into one MP4, retry in the
same card, remix, delete, and the gallery's filters."""

import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import av
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from PIL import Image

from studio import jobs, media
from studio.models import (
    Asset,
    ChainExport,
    ChainTree,
    Clip,
    Costs,
    Cut,
    Estimate,
    default_title,
    file_name_for,
    sequence_cuts,
)

from .conftest import run_enqueued
from .test_jobs import new_clip
from .test_views import ready_clip

pytestmark = pytest.mark.django_db

FPS = 24


def plain_clip(user, parent=None, status=Clip.Status.READY, prompt="A quiet harbour at dawn", **fields):
    """A clip row with no file behind it (for sequence rules and the gallery)."""
    fields.setdefault("provider", "simulator")
    fields.setdefault("model_key", "cinema")
    fields.setdefault("model_label", "Sim Cinema · offline preview")
    return Clip.objects.create(
        owner=user, parent=parent, status=status, prompt=prompt, aspect_ratio="16:9", duration=4, **fields
    )


def continued(user, parent, prompt):
    return ready_clip(user, parent=parent, first_frame=parent.last_frame, prompt=prompt)


def frames_in(path_or_file):
    with av.open(path_or_file) as container:
        return [frame.to_image() for frame in container.decode(container.streams.video[0])]


def encode(path, count, color, size=(320, 240), bframes=None):
    """A small H.264 clip whose frames differ (so seam checks mean something)."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", **({"bframes": str(bframes)} if bframes is not None else {})}
        for i in range(count):
            frame = av.VideoFrame.from_image(Image.new("RGB", size, (color, (i * 5) % 256, 80)))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


# --- One sequence per chain, takes and branches ---------------------------------------------


def timeline(html: str) -> list[int]:
    """The clips of the sequence player's timeline, in order."""
    return [int(pk) for pk in re.findall(r'data-seq-step="\d+" data-clip="(\d+)"', html)]


def test_a_chain_has_one_sequence_whatever_clip_it_is_opened_from(signed_in, user):
    root = plain_clip(user)
    first = plain_clip(user, parent=root, prompt="Take one")
    second = plain_clip(user, parent=root, prompt="Take two")
    below = plain_clip(user, parent=first, prompt="After take one")
    end = plain_clip(user, parent=below, prompt="The end")
    expected = [root, first, below, end]
    for clip in (root, first, second, below, end):
        assert ChainTree.of(clip).sequence == expected, clip
        assert clip.sequence() == expected
        assert timeline(signed_in.get(f"/clips/{clip.pk}/chain/").content.decode()) == [
            c.pk for c in expected
        ]
    # Opened from a take the sequence does not use, the page says where that take is.
    html = signed_in.get(f"/clips/{second.pk}/chain/").content.decode()
    assert f"Clip #{second.pk} is a take the sequence does not use" in html


def test_the_sequence_goes_on_through_the_take_later_steps_continue_else_the_newest_ready(user):
    root = plain_clip(user)
    older = plain_clip(user, parent=root, prompt="Take one")
    newer = plain_clip(user, parent=root, prompt="Take two")
    failed = plain_clip(user, parent=root, status=Clip.Status.FAILED, prompt="Take three failed")
    assert ChainTree.of(root).sequence == [root, newer]  # the newest ready take; a failed one never
    below = plain_clip(user, parent=older, prompt="After take one")
    tree = ChainTree.of(root)
    assert tree.sequence == [root, older, below]  # later steps continue take one
    assert [s.takes for s in tree.steps][1] == [older, newer, failed]  # the takes of step 2, side by side
    assert tree.steps[1].take_number == 1


def test_a_take_still_generating_is_used_only_when_no_take_is_ready(user):
    root = plain_clip(user)
    generating = plain_clip(user, parent=root, status=Clip.Status.RUNNING)
    assert ChainTree.of(root).sequence == [root, generating]
    ready = plain_clip(user, parent=root)
    assert ChainTree.of(root).sequence == [root, ready]


def test_a_new_take_never_moves_later_steps_to_a_branch_by_itself(user):
    root = plain_clip(user)
    take = plain_clip(user, parent=root)
    steps = line_of(user, take, "Step three", "Step four")
    # Generate again at step 2, and another branch continued from the new take: the
    # sequence the creator sees stays as it was, and the new work is a take and a branch.
    again = plain_clip(user, parent=root, prompt="Another take of step two")
    assert ChainTree.of(root).sequence == [root, take, *steps]
    elsewhere = plain_clip(user, parent=again, prompt="Continued elsewhere")
    tree = ChainTree.of(root)
    assert tree.sequence == [root, take, *steps]
    assert [(b.take, b.clips, b.from_step) for b in tree.branches()] == [(again, [again, elsewhere], 2)]


def line_of(user, parent, *prompts) -> list[Clip]:
    """Clips each continuing the one before, from `parent`."""
    made = []
    for prompt in prompts:
        made.append(plain_clip(user, parent=made[-1] if made else parent, prompt=prompt))
    return made


def test_choosing_a_take_with_later_steps_warns_first_and_keeps_them_as_a_branch(signed_in, user):
    root = plain_clip(user)
    one, two = (plain_clip(user, parent=root, prompt=p) for p in ("Take one", "Take two"))
    three, four, five = line_of(user, one, "Step three", "Step four", "Step five")
    assert ChainTree.of(root).sequence == [root, one, three, four, five]

    warning = signed_in.post(f"/clips/{two.pk}/use-take/", HTTP_HX_REQUEST="true").content.decode()
    assert "Steps 3–5 continue from take 1. They stay as a branch you can return to." in warning
    assert 'name="confirm" value="yes"' in warning and "hx-trigger" not in warning  # held still
    assert ChainTree.of(root).sequence == [root, one, three, four, five]  # nothing changed yet

    html = signed_in.post(f"/clips/{two.pk}/use-take/", {"confirm": "yes"}, HTTP_HX_REQUEST="true")
    tree = ChainTree.of(five)
    assert tree.sequence == [root, two]
    [branch] = tree.branches()
    assert branch.clips == [one, three, four, five] and branch.steps_text == "Steps 2–5"
    page = html.content.decode()
    assert "Branches" in page and f'action="/clips/{five.pk}/use-take/"' in page
    assert "Switch to this branch" in page

    # The way back: switching to the branch asks nothing (nothing follows take two) and
    # brings every old step back.
    signed_in.post(f"/clips/{branch.switch_to.pk}/use-take/", HTTP_HX_REQUEST="true")
    tree = ChainTree.of(two)
    assert tree.sequence == [root, one, three, four, five] and tree.branches() == []
    assert Clip.objects.count() == 6  # nothing deleted, nothing hidden


def test_switching_branches_keeps_the_choices_made_inside_each(signed_in, user):
    root = plain_clip(user)
    first, second = (plain_clip(user, parent=root, prompt=p) for p in ("First take", "Second take"))
    deeper_a, deeper_b = (plain_clip(user, parent=first, prompt=p) for p in ("Deeper A", "Deeper B"))
    [after_second] = line_of(user, second, "After the second take")
    assert ChainTree.of(root).sequence == [root, first, deeper_b]

    response = signed_in.post(f"/clips/{deeper_a.pk}/use-take/")
    assert response.status_code == 302 and response.url == f"/clips/{deeper_a.pk}/chain/"
    root.refresh_from_db()
    first.refresh_from_db()
    assert root.chosen_take == first and first.chosen_take == deeper_a
    assert ChainTree.of(second).sequence == [root, first, deeper_a]

    signed_in.post(f"/clips/{second.pk}/use-take/", {"confirm": "yes"})
    assert ChainTree.of(root).sequence == [root, second, after_second]
    [branch] = ChainTree.of(root).branches()
    assert branch.path == [root, first, deeper_a]  # the choice below the first take is kept
    signed_in.post(f"/clips/{first.pk}/use-take/", {"confirm": "yes"})
    assert ChainTree.of(root).sequence == [root, first, deeper_a]


def test_a_take_without_confirmation_is_not_used_by_a_plain_post(signed_in, user):
    root = plain_clip(user)
    one = plain_clip(user, parent=root)
    two = plain_clip(user, parent=root)
    plain_clip(user, parent=one)
    page = signed_in.post(f"/clips/{two.pk}/use-take/")
    assert (
        page.status_code == 200
        and "Step 3 continues from take 1. It stays as a branch" in page.content.decode()
    )
    assert ChainTree.of(root).sequence[1] == one


def test_an_unfinished_or_failed_take_is_refused_with_a_message(signed_in, user):
    root = plain_clip(user)
    used = plain_clip(user, parent=root)
    running = plain_clip(user, parent=root, status=Clip.Status.RUNNING)
    failed = plain_clip(user, parent=root, status=Clip.Status.FAILED, error="The provider was busy.")
    for take, words in ((running, "is still generating"), (failed, "failed, so it cannot be used")):
        response = signed_in.post(f"/clips/{take.pk}/use-take/", HTTP_HX_REQUEST="true")
        html = response.content.decode()
        assert response.status_code == 422 and f"Clip #{take.pk} {words}" in html
        # Beside the take it concerns.
        card = html[html.index(f'id="take-{take.pk}"') :]
        assert card.index(words) < card.index("</li>")
        response = signed_in.post(f"/clips/{take.pk}/use-take/", follow=True)
        assert words in response.content.decode()
    assert ChainTree.of(root).sequence == [root, used]
    root.refresh_from_db()
    assert root.chosen_take_id is None


def test_two_tabs_choosing_takes_the_last_choice_wins_and_both_see_it(signed_in, client, user):
    from django.test import Client

    root = plain_clip(user)
    one = plain_clip(user, parent=root)
    two = plain_clip(user, parent=root)
    other_tab = Client()
    other_tab.force_login(user)
    signed_in.post(f"/clips/{one.pk}/use-take/", HTTP_HX_REQUEST="true")
    other_tab.post(f"/clips/{two.pk}/use-take/", HTTP_HX_REQUEST="true")
    for tab in (signed_in, other_tab):
        html = tab.get(f"/clips/{root.pk}/chain/").content.decode()
        assert timeline(html) == [root.pk, two.pk]
        assert f'class="take take--ready take--chosen" id="take-{two.pk}"' in html


def test_what_a_creator_wrote_is_escaped_on_every_take_card(signed_in, user):
    root = plain_clip(user)
    nasty = '<script>alert("x")</script> "quoted" & <b>bold</b>'
    take = plain_clip(user, parent=root, prompt=nasty, model_label="<i>Model</i>")
    plain_clip(
        user, parent=root, prompt=nasty, status=Clip.Status.FAILED, error="<img src=x onerror=alert(1)>"
    )
    html = signed_in.get(f"/clips/{take.pk}/chain/").content.decode()
    assert "<script>alert" not in html and "<b>bold</b>" not in html and "<i>Model</i>" not in html
    assert "<img src=x" not in html
    assert (
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &quot;quoted&quot; &amp; &lt;b&gt;bold&lt;/b&gt;"
        in html
    )
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_a_root_clip_is_not_a_take(signed_in, user):
    root = plain_clip(user)
    assert signed_in.post(f"/clips/{root.pk}/use-take/").status_code == 404


def test_continuing_a_clip_that_has_a_child_starts_a_new_take(signed_in, user, enqueued):
    parent = ready_clip(user)
    for prompt in ("The first way it goes on", "Another way it goes on"):
        response = signed_in.post(
            "/generate/",
            {
                "model": "simulator:cinema",
                "prompt": prompt,
                "aspect_ratio": "16:9",
                "duration": "4",
                "start_mode": "first_frame",
                "parent": parent.pk,
                "first_frame_asset": parent.last_frame_id,
            },
        )
        assert response.status_code == 302
    takes = parent.takes()
    assert [t.prompt for t in takes] == ["The first way it goes on", "Another way it goes on"]
    html = signed_in.get(f"/clips/{takes[1].pk}/chain/").content.decode()
    assert "2 takes" in html


def test_generate_again_makes_a_new_take_with_the_same_settings(signed_in, user, enqueued):
    parent = ready_clip(user, prompt="Root of the story")
    take = continued(user, parent, "The lantern rises into falling snow")
    response = signed_in.post(f"/clips/{take.pk}/again/")
    again = Clip.objects.order_by("-pk").first()
    assert response.status_code == 302 and response.url == f"/clips/{again.pk}/chain/"
    assert again.pk != take.pk and again.parent == parent
    assert (again.prompt, again.model_ref, again.aspect_ratio, again.duration, again.first_frame_id) == (
        take.prompt,
        take.model_ref,
        take.aspect_ratio,
        take.duration,
        take.first_frame_id,
    )
    assert again.status == Clip.Status.QUEUED
    assert parent.takes() == [take, again]


def test_generate_again_in_the_chain_view_shows_the_new_take_at_once_and_polls(
    signed_in, user, enqueued, django_capture_on_commit_callbacks
):
    parent = ready_clip(user, prompt="Root of the story")
    take = continued(user, parent, "The lantern rises into falling snow")
    live = signed_in.get(f"/clips/{take.pk}/chain/live/", HTTP_HX_REQUEST="true").content.decode()
    assert "hx-trigger" not in live.split(">", 1)[0]  # everything finished: no polling
    enqueued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_in.post(
            f"/clips/{take.pk}/chain/again/",
            {"chain": parent.pk, "opened": parent.pk},
            HTTP_HX_REQUEST="true",
        )
    again = Clip.objects.order_by("-pk").first()
    html = response.content.decode()
    # The page goes on as opened from its own clip (it polls that chain view's live part).
    assert f'hx-get="/clips/{parent.pk}/chain/live/' in html and "does not use" not in html
    assert response.status_code == 200 and again.parent == parent and again.prompt == take.prompt
    assert f'id="take-{again.pk}"' in html and "2 takes" in html
    assert 'hx-trigger="every 2s"' in html.split(">", 1)[0]  # the live part polls again
    assert enqueued == [("studio.jobs.submit_clip", (again.pk,))]
    # The take in use stays in the sequence while the new one is generating.
    assert timeline(html) == [parent.pk, take.pk]


def test_continue_in_the_chain_view_adds_the_next_step_from_the_last_frame(
    signed_in, user, enqueued, django_capture_on_commit_callbacks
):
    root = ready_clip(user, prompt="A paper lantern drifts over a dark lake")
    take = continued(user, root, "The lantern rises into falling snow")
    page = signed_in.get(f"/clips/{root.pk}/chain/").content.decode()
    assert f'action="/clips/{take.pk}/chain/continue/"' in page and "Continue from last frame" in page
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_in.post(
            f"/clips/{take.pk}/chain/continue/",
            {"prompt": "The snow settles on a silent town"},
            HTTP_HX_REQUEST="true",
        )
    new = Clip.objects.order_by("-pk").first()
    assert response.status_code == 200
    assert (new.parent, new.first_frame_id, new.prompt) == (
        take,
        take.last_frame_id,
        "The snow settles on a silent town",
    )
    assert (new.model_ref, new.aspect_ratio, new.duration) == (
        take.model_ref,
        take.aspect_ratio,
        take.duration,
    )
    assert timeline(response.content.decode()) == [root.pk, take.pk, new.pk]


def test_continue_in_the_chain_view_with_no_prompt_says_so_beside_the_field(signed_in, user, enqueued):
    root = ready_clip(user)
    response = signed_in.post(f"/clips/{root.pk}/chain/continue/", {"prompt": "  "}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 422 and Clip.objects.count() == 1
    field = html[html.index(f'id="next-prompt-{root.pk}"') :]
    assert field.index('class="field-error"') < field.index("</div>")


def test_a_failed_take_says_why_and_is_tried_again_in_place(
    signed_in, user, enqueued, django_capture_on_commit_callbacks
):
    root = ready_clip(user)
    take = continued(user, root, "The lantern rises")
    failed = new_clip(user, parent=root, first_frame=root.last_frame, prompt="The lantern sinks")
    failed.fail("The provider was overloaded.")
    html = signed_in.get(f"/clips/{root.pk}/chain/").content.decode()
    card = html[html.index(f'id="take-{failed.pk}"') :]
    card = card[: card.index("</li>")]
    assert "The provider was overloaded." in card and "Try again" in card
    enqueued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_in.post(f"/clips/{failed.pk}/chain/retry/", HTTP_HX_REQUEST="true")
    failed.refresh_from_db()
    assert failed.status == Clip.Status.QUEUED and Clip.objects.count() == 3
    assert enqueued == [("studio.jobs.submit_clip", (failed.pk,))]
    assert 'hx-trigger="every 2s"' in response.content.decode().split(">", 1)[0]
    assert ChainTree.of(root).sequence == [root, take]


def test_costs_keep_credits_and_dollars_apart_and_mark_estimates():
    clips = [
        Clip(duration=8, video_duration=8.0, cost_actual=Decimal("12"), cost_unit="credits"),
        Clip(duration=5, cost_estimate=Decimal("0.40"), cost_unit="USD", status=Clip.Status.RUNNING),
        Clip(duration=8, video_duration=8.0, cost_actual=Decimal("6"), cost_unit="credits"),
        Clip(duration=8, cost_estimate=Decimal("6"), cost_unit="credits", status=Clip.Status.QUEUED),
        Clip(duration=4, video_duration=4.0, cost_actual=Decimal("0"), cost_unit=""),
        # A failed job nothing was reported for is not charged; one with a reported cost is.
        Clip(duration=8, cost_estimate=Decimal("6"), cost_unit="credits", status=Clip.Status.FAILED),
        Clip(duration=8, cost_actual=Decimal("1"), cost_unit="USD", status=Clip.Status.FAILED),
    ]
    costs = Costs.of(clips)
    assert costs.parts() == [
        "≈ 1.4 USD (1 reported, 0.4 estimated)",
        "≈ 24 credits (18 reported, 6 estimated)",
    ]
    assert costs.has_estimates
    assert str(Costs.of(clips[:1] + clips[2:3])) == "18 credits"
    assert str(Costs.of([Clip(duration=4, cost_actual=Decimal("0"))])) == "Free"
    unknown = Costs.of([Clip(duration=4, status=Clip.Status.READY, cost_unit="credits"), clips[0]])
    assert str(unknown) == "12 credits · price unknown for 1 clip"


def test_the_next_step_adds_its_estimate_to_the_cost_so_far():
    so_far = Costs.of([Clip(cost_actual=Decimal("12"), cost_unit="credits")])
    after = so_far.plus(Estimate(Decimal("6"), "credits"))
    assert str(Estimate(Decimal("6"), "credits")) == "≈ 6 credits"
    assert str(after) == "≈ 18 credits (12 reported, 6 estimated)"
    assert str(so_far) == "12 credits"  # the cost so far itself is unchanged
    assert str(so_far.plus(Estimate(Decimal("0.5"), "USD"))) == "≈ 0.5 USD (estimated) · 12 credits"
    assert str(so_far.plus(Estimate(None, "USD"))) == "12 credits · price unknown for 1 clip"
    assert str(Estimate(Decimal(0))) == "Free" and str(Costs().plus(Estimate(Decimal(0)))) == "Free"


# --- Titles, cost so far, the live part, cuts -------------------------------------------------


def test_a_chain_is_titled_with_the_first_words_of_its_first_prompt_until_named():
    assert default_title("A paper lantern drifts over a dark lake, slow dolly in") == (
        "A paper lantern drifts over a dark lake"
    )
    assert default_title("Wide shot of a harbour at dawn with fishing boats leaving one by one") == (
        "Wide shot of a harbour at…"
    )
    assert default_title("  Neon rain.  ") == "Neon rain"
    assert default_title("") == "Untitled chain"


def test_a_title_becomes_a_file_name_with_its_accents_and_without_what_file_systems_refuse():
    assert file_name_for("Le phare à l’aube") == "Le phare à l’aube.mp4"
    assert file_name_for('Act 1/2: "Night" <final>?') == "Act 1 2 Night final.mp4"
    assert file_name_for(" ... ") == "lastframe-chain.mp4"
    assert file_name_for(default_title("A red fox trots through fresh snow at dawn")) == (
        "A red fox trots through fresh.mp4"
    )
    assert len(file_name_for("x" * 200)) == 104


def test_the_title_is_edited_in_place_and_shows_in_the_gallery_and_names_the_download(signed_in, user):
    root = plain_clip(user, prompt="A paper lantern drifts over a dark lake, slow dolly in")
    take = plain_clip(user, parent=root)
    page = signed_in.get(f"/clips/{take.pk}/chain/").content.decode()
    assert "A paper lantern drifts over a dark lake</h1>" in page and "Edit title" in page
    form = signed_in.get(f"/clips/{take.pk}/chain/title/", HTTP_HX_REQUEST="true").content.decode()
    assert '<label for="chain-title-input">Title</label>' in form
    assert 'value="A paper lantern drifts over a dark lake"' in form
    response = signed_in.post(
        f"/clips/{take.pk}/chain/title/", {"title": "  The lantern  "}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200 and "The lantern</h1>" in response.content.decode()
    assert ChainTree.of(root).title == "The lantern"
    gallery = signed_in.get("/?show=chains").content.decode()
    assert "The lantern</a></h2>" in gallery
    export = ChainExport.objects.create(
        owner=user,
        clip=take,
        clip_ids=[root.pk, take.pk],
        sequence_key=f"{root.pk},{take.pk}",
        status=ChainExport.Status.READY,
        file="exports/x/chain.mp4",
    )
    (Path(export.file.path)).parent.mkdir(parents=True)
    Path(export.file.path).write_bytes(b"film")
    download = signed_in.get(f"/exports/{export.pk}/chain.mp4")
    assert download["Content-Disposition"] == 'attachment; filename="The lantern.mp4"'
    # Without JavaScript: the page's own form, then back to the chain view.
    assert 'value="The lantern"' in signed_in.get(f"/clips/{root.pk}/chain/?edit=title").content.decode()
    response = signed_in.post(f"/clips/{root.pk}/chain/title/", {"title": "Lantern, the film"})
    assert response.status_code == 302 and ChainTree.of(take).title == "Lantern, the film"


@pytest.mark.parametrize(
    ("title", "message"),
    [
        ("", "Give the chain a title"),
        ("   ", "Give the chain a title"),
        ("x" * 201, "Keep the title to 200 characters or fewer (this one has 201)."),
    ],
)
def test_an_empty_or_too_long_title_is_refused_beside_the_field_and_nothing_is_saved(
    signed_in, user, title, message
):
    root = plain_clip(user, prompt="A paper lantern drifts over a dark lake")
    signed_in.post(f"/clips/{root.pk}/chain/title/", {"title": "Kept"})
    for headers in ({"HTTP_HX_REQUEST": "true"}, {}):
        response = signed_in.post(f"/clips/{root.pk}/chain/title/", {"title": title}, **headers)
        html = response.content.decode()
        assert response.status_code == 422 and message in html
        field = html[html.index('id="chain-title-input"') :]
        assert field.index(message) < field.index("</div>")  # beside the field
    assert ChainTree.of(root).title == "Kept"
    assert signed_in.post(f"/clips/{root.pk}/chain/title/", {"title": "y" * 200}).status_code == 302


def test_the_chain_view_shows_the_cost_so_far_and_what_the_next_step_will_add(signed_in, user, settings):
    settings.PICTORY_API_KEY = "test-key-not-real"
    pictory = {"provider": "pictory", "model_key": "veo3.1_fast", "model_label": "Veo 3.1 Fast · Pictory"}
    root = plain_clip(user, cost_actual=Decimal("40"), cost_unit="credits", **pictory)
    take = plain_clip(user, parent=root, cost_estimate=Decimal("40"), cost_unit="credits", **pictory)
    # A take that failed with nothing reported costs nothing; trying it again would.
    failed = plain_clip(
        user,
        parent=root,
        status=Clip.Status.FAILED,
        cost_estimate=Decimal("40"),
        cost_unit="credits",
        **pictory,
    )
    html = signed_in.get(f"/clips/{root.pk}/chain/").content.decode()
    so_far = html[html.index('id="cost-so-far"') :]
    assert so_far.startswith('id="cost-so-far">≈ 80 credits (40 reported, 40 estimated)')
    assert "3 clips made, every take and branch counted; ≈ marks estimates" in so_far
    adds = "Adds ≈ 40 credits · cost so far becomes ≈ 120 credits (40 reported, 80 estimated)"
    again = html[html.index('id="again-cost-2"') :]
    assert again.startswith(f'id="again-cost-2">{adds}')
    retry = html[html.index(f'id="retry-cost-{failed.pk}"') :]
    assert retry.startswith(f'id="retry-cost-{failed.pk}">{adds}')
    # Continuing the last step (a ready take here) adds one more clip like it.
    Clip.objects.filter(pk=take.pk).update(last_frame=Asset.objects.create(owner=user, file="assets/x/l.png"))
    html = signed_in.get(f"/clips/{root.pk}/chain/").content.decode()
    assert f'<p class="cost">{adds}</p>' in html


def test_the_live_part_answers_no_change_until_a_take_finishes_then_stops_polling(signed_in, user):
    root = plain_clip(user)
    take = plain_clip(user, parent=root, status=Clip.Status.RUNNING)
    live = signed_in.get(f"/clips/{root.pk}/chain/live/", HTTP_HX_REQUEST="true")
    html = live.content.decode()
    signature = re.search(r'data-signature="(\w+)"', html).group(1)
    assert f'hx-get="/clips/{root.pk}/chain/live/?v={signature}" hx-trigger="every 2s"' in html
    assert "disabled" in html[html.index('id="chain-export"') :][:400]  # not joinable yet
    same = signed_in.get(f"/clips/{root.pk}/chain/live/?v={signature}", HTTP_HX_REQUEST="true")
    assert same.status_code == 204 and same.content == b""
    Clip.objects.filter(pk=take.pk).update(status=Clip.Status.READY, video_duration=4.0)
    done = signed_in.get(f"/clips/{root.pk}/chain/live/?v={signature}", HTTP_HX_REQUEST="true")
    html = done.content.decode()
    assert done.status_code == 200 and "hx-trigger" not in html.split(">", 1)[0]
    export = html[html.index('id="chain-export"') :]
    assert (
        export.index("Download the whole chain") < export.index("</form>") and "disabled" not in export[:600]
    )


def chain_of(user, steps: int, takes: int) -> Clip:
    """A chain of `steps` steps, each with `takes` takes, the later steps continuing the
    first take; returns its root."""
    root = plain_clip(user, thumbnail="clips/x/t.jpg", video_duration=4.0)
    parent = root
    for _ in range(steps - 1):
        made = [
            plain_clip(user, parent=parent, thumbnail="clips/x/t.jpg", video_duration=4.0)
            for _ in range(takes)
        ]
        parent = made[0]
    return root


def test_the_chain_view_and_its_live_part_read_a_constant_number_of_queries(signed_in, user):
    def queries(url, **headers):
        with CaptureQueriesContext(connection) as ctx:
            response = signed_in.get(url, **headers)
            assert response.status_code in (200, 204)
        return len(ctx.captured_queries)

    def counts(root):
        live = signed_in.get(f"/clips/{root.pk}/chain/live/", HTTP_HX_REQUEST="true").content.decode()
        signature = re.search(r'data-signature="(\w+)"', live).group(1)
        return (
            queries(f"/clips/{root.pk}/chain/"),
            queries(f"/clips/{root.pk}/chain/live/", HTTP_HX_REQUEST="true"),
            queries(f"/clips/{root.pk}/chain/live/?v={signature}", HTTP_HX_REQUEST="true"),
        )

    small, large = chain_of(user, 3, 2), chain_of(user, 12, 3)
    for root in (small, large):  # something still generating, so the live part polls
        plain_clip(user, parent=ChainTree.of(root).last, status=Clip.Status.RUNNING)
    assert counts(small) == counts(large)
    page, live, unchanged = counts(large)
    assert unchanged <= 3 and live <= page


def test_the_player_and_the_join_cut_in_the_same_places(signed_in, user, monkeypatch, settings):
    frame = Asset.objects.create(owner=user, file="assets/x/last.png")
    fields = {"video_duration": 4.0, "video_frames": 96}
    root = plain_clip(user, video="clips/a/video.mp4", last_frame=frame, **fields)
    seamless = plain_clip(user, parent=root, first_frame=frame, video="clips/b/video.mp4", **fields)
    fresh = plain_clip(user, parent=seamless, video="clips/c/video.mp4", video_duration=5.0, video_frames=150)
    clips = [root, seamless, fresh]
    cuts = sequence_cuts(clips)
    assert [(c.skip_frames, c.keep_frames) for c in cuts] == [(0, None), (1, None), (0, None)]
    assert [round(c.start, 4) for c in cuts] == [0, 0.0417, 0]
    assert [round(c.seconds, 4) for c in cuts] == [4.0, 3.9583, 5.0]
    html = signed_in.get(f"/clips/{fresh.pk}/chain/").content.decode()
    player = re.findall(r'data-start="([\d.]+)" data-end="([\d.]+)" data-fps="([\d.]+)"', html)
    assert player == [
        ("0.0000", "4.0000", "24.0000"),
        ("0.0417", "4.0000", "24.0000"),
        ("0.0000", "5.0000", "30.0000"),
    ]
    assert ChainTree.of(root).seconds == pytest.approx(12.9583, abs=1e-4)  # as long as its cuts
    assert "3 steps · 13.0 s" in html

    for clip in clips:
        Path(clip.video.path).parent.mkdir(parents=True)
        Path(clip.video.path).write_bytes(b"")
    joined = []

    def join_videos(parts, out, progress=None):
        joined.extend(parts)
        raise media.MediaError("stopped by the test")

    monkeypatch.setattr(media, "join_videos", join_videos)
    export = jobs.start_export(user, clips)
    jobs.export_chain(export.pk)
    assert joined == [cut.join_part(Path(clip.video.path)) for cut, clip in zip(cuts, clips)]
    assert [part.drop_seam for part in joined] == [False, True, False]


def test_a_cut_becomes_the_joins_part(tmp_path):
    clip = Clip(video_duration=4.0, video_frames=96)
    path = tmp_path / "video.mp4"
    # A lone repeated picture: the join may leave out either copy.
    assert Cut(clip, skip_frames=1, repeats_previous=True).join_part(path) == media.JoinPart(
        path, drop_seam=True
    )
    # More frames to leave out (an extend result repeating its source): exactly those.
    assert Cut(clip, skip_frames=2, keep_frames=80).join_part(path) == media.JoinPart(
        path, keep_frames=80, skip_frames=2
    )
    assert (Cut(clip, skip_frames=2, keep_frames=80).start, Cut(clip, keep_frames=80).end) == (
        2 / 24,
        80 / 24,
    )


def test_a_clip_made_before_frames_were_counted_is_taken_at_24_fps():
    assert Clip(video_duration=4.0).frames_per_second == 24.0
    assert Clip(video_duration=5.0, video_frames=150).frames_per_second == 30.0


# --- Joining ----------------------------------------------------------------------------


def test_a_chain_with_a_clip_still_generating_cannot_be_joined(signed_in, user):
    root = plain_clip(user)
    generating = plain_clip(user, parent=root, status=Clip.Status.RUNNING)
    html = signed_in.get(f"/clips/{root.pk}/chain/").content.decode()
    assert "disabled" in html and f"Clip #{generating.pk} is still generating" in html
    response = signed_in.post(f"/clips/{root.pk}/chain/export/", HTTP_HX_REQUEST="true")
    assert response.status_code == 409 and "still generating" in response.content.decode()
    assert not ChainExport.objects.exists()


def test_download_the_whole_chain_joins_it_once_with_the_seam_frame_dropped(
    signed_in, user, enqueued, django_capture_on_commit_callbacks
):
    root = ready_clip(user, prompt="A paper lantern drifts over a dark lake")
    take = continued(user, root, "The lantern rises into falling snow")
    enqueued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_in.post(f"/clips/{root.pk}/chain/export/", HTTP_HX_REQUEST="true")
    export = ChainExport.objects.get()
    assert export.clip_ids == [root.pk, take.pk] and export.status == ChainExport.Status.QUEUED
    html = response.content.decode()
    assert f'hx-get="/exports/{export.pk}/"' in html and 'hx-trigger="every 1s"' in html
    assert enqueued == [("studio.jobs.export_chain", (export.pk,))]
    # A second click while it waits starts nothing new.
    signed_in.post(f"/clips/{root.pk}/chain/export/", HTTP_HX_REQUEST="true")
    assert ChainExport.objects.count() == 1

    jobs.export_chain(export.pk)
    jobs.export_chain(export.pk)  # safe to run twice: claimed
    export.refresh_from_db()
    assert export.status == ChainExport.Status.READY, export.error
    assert export.attempts == 1 and export.progress == 100
    assert (root.video_frames, take.video_frames) == (4 * FPS, 4 * FPS)  # kept when each was made
    # A stream copy, with at most the few frames next to the seam re-encoded.
    assert export.method in ("copy", "smartcut") and export.dropped_frames == 1

    fragment = signed_in.get(f"/exports/{export.pk}/").content.decode()
    assert "hx-trigger" not in fragment and f'href="/exports/{export.pk}/chain.mp4"' in fragment
    download = signed_in.get(f"/exports/{export.pk}/chain.mp4")
    # Named after the chain's title (by default the first words of its first prompt).
    assert (
        download["Content-Disposition"]
        == 'attachment; filename="A paper lantern drifts over a dark lake.mp4"'
    )
    target = Path(export.file.path).with_name("downloaded.mp4")
    target.write_bytes(b"".join(download.streaming_content))
    info = media.probe(target)
    parts = [media.probe(Path(c.video.path)) for c in (root, take)]
    assert info.duration == pytest.approx(sum(p.duration for p in parts) - 1 / FPS, abs=0.002)
    joined = frames_in(str(target))
    assert len(joined) == sum(p.frames for p in parts) - 1
    # No stutter: the frame after the seam is the take's second frame, not its first again.
    take_frames = frames_in(take.video.path)
    assert mean_diff(joined[parts[0].frames], take_frames[1]) < mean_diff(
        joined[parts[0].frames], take_frames[0]
    )


def mean_diff(a, b):
    from PIL import ImageChops, ImageStat

    return sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean) / 3


def test_clips_sharing_codec_parameters_are_joined_by_stream_copy(tmp_path):
    a = encode(tmp_path / "a.mp4", 48, 10, bframes=0)
    b = encode(tmp_path / "b.mp4", 36, 120, bframes=0)
    c = encode(tmp_path / "c.mp4", 24, 200, bframes=0)
    out = tmp_path / "out.mp4"
    result = media.join_videos([media.JoinPart(a), media.JoinPart(b, drop_seam=True), media.JoinPart(c)], out)
    assert (result.method, result.dropped) == ("copy", 1)
    frames = frames_in(str(out))
    assert len(frames) == 48 + 36 + 24 - 1 == result.frames
    assert result.duration == pytest.approx((48 + 36 + 24 - 1) / FPS, abs=0.002)
    # Stream copy leaves out the previous clip's last frame (the same picture as the seam).
    assert mean_diff(frames[47], frames_in(str(b))[0]) < 3


def test_simulator_clips_with_no_seam_are_joined_by_stream_copy(tmp_path):
    from studio.providers.simulator import render

    render(tmp_path / "a.mp4", "First shot of the night", "16:9", 4, None)
    render(tmp_path / "b.mp4", "Second shot of the night", "16:9", 4, None)
    result = media.join_videos(
        [media.JoinPart(tmp_path / "a.mp4"), media.JoinPart(tmp_path / "b.mp4")], tmp_path / "out.mp4"
    )
    assert (result.method, result.frames, result.duration) == ("copy", 192, 8.0)
    assert len(frames_in(str(tmp_path / "out.mp4"))) == 192


def test_a_seam_frame_other_frames_refer_to_is_left_out_by_re_encoding_only_next_to_it(tmp_path, settings):
    from studio.providers.simulator import render

    # At the simulator's own 480 lines, x264 ends this clip with B-frames that refer to its
    # last frame, so dropping that packet in a plain stream copy would break them: the
    # frames next to the seam are re-encoded, the rest copied.
    settings.SIMULATOR_HEIGHT = 480
    render(tmp_path / "a.mp4", "hello world test", "16:9", 4, None)
    media.last_frame(tmp_path / "a.mp4").save(tmp_path / "last.png")
    render(tmp_path / "b.mp4", "The next moment", "16:9", 4, tmp_path / "last.png")
    parts = [media.JoinPart(tmp_path / "a.mp4"), media.JoinPart(tmp_path / "b.mp4", drop_seam=True)]
    result = media.join_videos(parts, tmp_path / "out.mp4")
    assert (result.method, result.frames, result.dropped) == ("smartcut", 191, 1)
    assert int(result.reason.split()[0]) <= 3
    assert result.duration == pytest.approx(8 - 1 / FPS, abs=0.002)
    joined = frames_in(str(tmp_path / "out.mp4"))
    second = frames_in(str(tmp_path / "b.mp4"))
    assert mean_diff(joined[96], second[1]) < 3  # the seam picture shown once


def test_clips_that_differ_are_re_encoded_to_the_first_clips_format(tmp_path):
    a = encode(tmp_path / "a.mp4", 24, 10, size=(320, 240))
    b = encode(tmp_path / "b.mp4", 24, 120, size=(480, 270))
    out = tmp_path / "out.mp4"
    result = media.join_videos([media.JoinPart(a), media.JoinPart(b, drop_seam=True)], out)
    assert result.method == "reencode" and "differ" in result.reason
    info = media.probe(out)
    assert (info.width, info.height, info.codec) == (320, 240, "h264")
    assert result.frames == 47 and info.duration == pytest.approx(47 / FPS, abs=0.002)


def test_a_join_whose_worker_died_is_handed_out_again(user):
    clip = plain_clip(user)
    export = ChainExport.objects.create(
        owner=user,
        clip=clip,
        clip_ids=[clip.pk],
        sequence_key=str(clip.pk),
        status=ChainExport.Status.RUNNING,
        attempts=1,
        claimed_at=timezone.now() - jobs.EXPORT_STALE_AFTER - timedelta(seconds=5),
    )
    assert jobs.recover_stale_exports() == [export.pk]
    export.refresh_from_db()
    assert export.status == ChainExport.Status.QUEUED
    jobs.export_chain(export.pk)  # the clip has no video: fails with a reason rather than hanging
    export.refresh_from_db()
    assert export.status == ChainExport.Status.FAILED and f"Clip #{clip.pk}" in export.error


# --- Retry, remix, delete -----------------------------------------------------------------


def test_retry_sends_the_same_clip_again_in_the_same_card(
    signed_in, user, enqueued, django_capture_on_commit_callbacks
):
    clip = new_clip(user)
    clip.fail("The provider was overloaded.")
    old_deadline = clip.deadline_at
    enqueued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_in.post(f"/clips/{clip.pk}/retry/", HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200 and f'id="clip-{clip.pk}"' in html and 'hx-trigger="every 2s"' in html
    clip.refresh_from_db()
    assert clip.status == Clip.Status.QUEUED and clip.error == "" and clip.deadline_at > old_deadline
    assert Clip.objects.count() == 1
    assert enqueued == [("studio.jobs.submit_clip", (clip.pk,))]
    # A second click (or a replay) does not send it twice.
    with django_capture_on_commit_callbacks(execute=True):
        signed_in.post(f"/clips/{clip.pk}/retry/", HTTP_HX_REQUEST="true")
    assert len(enqueued) == 1
    run_enqueued([e for e in enqueued if e[0] == "studio.jobs.submit_clip"])
    clip.refresh_from_db()
    assert clip.status == Clip.Status.RUNNING


def test_retry_of_a_clip_the_provider_objected_to_opens_the_form(signed_in, user, enqueued):
    clip = new_clip(user)
    clip.fail("Bad request", field_errors={"prompt": ["Too vague."]})
    response = signed_in.post(f"/clips/{clip.pk}/retry/")
    assert response.status_code == 302 and response.url == f"/clips/{clip.pk}/retry/"
    assert "Too vague." in signed_in.get(response.url).content.decode()
    clip.refresh_from_db()
    assert clip.status == Clip.Status.FAILED


def test_remix_opens_the_form_filled_with_the_clips_settings(signed_in, user, enqueued):
    parent = ready_clip(user, model="simulator:motion", aspect_ratio="4:3", duration=5)
    clip = new_clip(
        user,
        model="simulator:motion",
        aspect_ratio="4:3",
        duration=8,
        parent=parent,
        first_frame=parent.last_frame,
        prompt="A heron lifts off the reeds at dusk",
    )
    html = signed_in.get(f"/clips/{clip.pk}/remix/").content.decode()
    assert "A heron lifts off the reeds at dusk</textarea>" in html
    assert 'value="simulator:motion" selected' in html and 'value="4:3" selected' in html
    assert 'value="8" selected' in html
    assert f'name="parent" value="{parent.pk}"' in html
    assert f'name="first_frame_asset" value="{parent.last_frame_id}"' in html
    assert "errorlist" not in html and "field-error" not in html


def test_deleting_a_clip_removes_it_and_its_files(
    signed_in, user, enqueued, django_capture_on_commit_callbacks
):
    clip = ready_clip(user)
    files = [Path(clip.video.path), Path(clip.thumbnail.path), Path(clip.last_frame.file.path)]
    assert all(f.exists() for f in files)
    page = signed_in.get(f"/clips/{clip.pk}/delete/").content.decode()
    assert f"Delete clip #{clip.pk}?" in page and 'name="takes"' not in page
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_in.post(f"/clips/{clip.pk}/delete/")
    assert response.status_code == 302
    assert not Clip.objects.exists() and not Asset.objects.exists()
    assert not any(f.exists() for f in files)


def test_deleting_a_clip_with_takes_asks_and_keeps_them_as_roots(
    signed_in, user, enqueued, django_capture_on_commit_callbacks
):
    root = ready_clip(user, prompt="Root of the story")
    take = continued(user, root, "The story goes on")
    page = signed_in.get(f"/clips/{root.pk}/delete/").content.decode()
    assert "1 take continues from this clip" in page and 'value="delete"' in page
    with django_capture_on_commit_callbacks(execute=True):
        signed_in.post(f"/clips/{root.pk}/delete/", {"takes": "keep"})
    take.refresh_from_db()
    assert take.parent_id is None and take.sequence() == [take]
    # The take still starts from the picture it was made from.
    assert take.first_frame is not None and Path(take.first_frame.file.path).exists()
    assert not Path(root.video.path).exists()


def test_deleting_a_clip_with_its_takes_deletes_everything_below_it(signed_in, user):
    root = plain_clip(user)
    take = plain_clip(user, parent=root)
    other = plain_clip(user, parent=root)
    below = plain_clip(user, parent=take)
    keep = plain_clip(user, prompt="Another chain")
    page = signed_in.get(f"/clips/{root.pk}/delete/").content.decode()
    assert "2 takes continue from this clip" in page and "3 clips in all" in page
    signed_in.post(f"/clips/{root.pk}/delete/", {"takes": "delete"})
    assert list(Clip.objects.all()) == [keep]
    assert not Clip.objects.filter(pk__in=[take.pk, other.pk, below.pk]).exists()


def test_other_creators_get_404_for_chain_pages_and_actions(client, user, other_user):
    root = plain_clip(user)
    take = plain_clip(user, parent=root)
    export = ChainExport.objects.create(owner=user, clip=root, clip_ids=[root.pk], sequence_key=str(root.pk))
    client.force_login(other_user)
    for url in (
        f"/clips/{take.pk}/chain/",
        f"/clips/{take.pk}/remix/",
        f"/clips/{take.pk}/delete/",
        f"/exports/{export.pk}/",
        f"/exports/{export.pk}/chain.mp4",
    ):
        assert client.get(url).status_code == 404, url
    for url in (
        f"/clips/{take.pk}/chain/live/",
        f"/clips/{take.pk}/chain/card/",
        f"/clips/{take.pk}/chain/title/",
    ):
        assert client.get(url, HTTP_HX_REQUEST="true").status_code == 404, url
    for url in (
        f"/clips/{take.pk}/use-take/",
        f"/clips/{take.pk}/again/",
        f"/clips/{take.pk}/retry/",
        f"/clips/{take.pk}/delete/",
        f"/clips/{root.pk}/chain/export/",
        f"/clips/{root.pk}/chain/title/",
        f"/clips/{take.pk}/chain/again/",
        f"/clips/{take.pk}/chain/retry/",
        f"/clips/{root.pk}/chain/continue/",
    ):
        assert (
            client.post(url, {"title": "Mine now", "prompt": "Mine now", "confirm": "yes"}).status_code == 404
        ), url
    assert Clip.objects.count() == 2 and ChainExport.objects.count() == 1
    assert ChainTree.of(root).title == "A quiet harbour at dawn" and ChainTree.of(root).sequence == [
        root,
        take,
    ]


def test_a_take_or_branch_sent_from_another_chains_view_is_404(signed_in, user):
    root = plain_clip(user)
    one = plain_clip(user, parent=root)
    two = plain_clip(user, parent=root)
    other_root = plain_clip(user, prompt="Another chain")
    for take in (one, two):
        response = signed_in.post(f"/clips/{take.pk}/use-take/", {"chain": other_root.pk, "confirm": "yes"})
        assert response.status_code == 404
    for url in (f"/clips/{two.pk}/chain/again/", f"/clips/{two.pk}/chain/retry/"):
        assert signed_in.post(url, {"chain": other_root.pk}).status_code == 404
    root.refresh_from_db()
    assert root.chosen_take_id is None and Clip.objects.count() == 4
    assert signed_in.post(f"/clips/{one.pk}/use-take/", {"chain": root.pk}).status_code == 302


def test_actions_need_csrf(user):
    from django.test import Client

    root = plain_clip(user)
    take = plain_clip(user, parent=root)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    for url in (
        f"/clips/{take.pk}/use-take/",
        f"/clips/{take.pk}/delete/",
        f"/clips/{root.pk}/chain/export/",
    ):
        assert client.post(url).status_code == 403, url
    assert Clip.objects.count() == 2


# --- Gallery --------------------------------------------------------------------------------


def test_gallery_filters_by_status_and_model_and_searches_prompts(signed_in, user):
    lantern = plain_clip(user, prompt="A paper lantern over the lake")
    failed = plain_clip(user, status=Clip.Status.FAILED, prompt="A storm at sea")
    running = plain_clip(user, status=Clip.Status.RUNNING, prompt="Lantern festival at night")
    motion = plain_clip(
        user, prompt="City traffic", model_key="motion", model_label="Sim Motion · offline preview"
    )

    def shown(query):
        html = signed_in.get("/" + query).content.decode()
        return {c.pk for c in (lantern, failed, running, motion) if f'id="clip-{c.pk}"' in html}

    assert shown("") == {lantern.pk, failed.pk, running.pk, motion.pk}
    assert shown("?status=failed") == {failed.pk}
    assert shown("?status=generating") == {running.pk}
    assert shown("?status=ready") == {lantern.pk, motion.pk}
    assert shown("?model=simulator:motion") == {motion.pk}
    assert shown("?q=lantern") == {lantern.pk, running.pk}
    assert shown("?q=lantern&status=ready") == {lantern.pk}
    html = signed_in.get("/?q=nothing-like-this").content.decode()
    assert "No clips match these filters." in html
    page = signed_in.get("/").content.decode()
    assert 'value="simulator:motion"' in page and "Any status" in page


def test_filter_changes_swap_only_the_gallery(signed_in, user):
    plain_clip(user, prompt="A paper lantern over the lake")
    response = signed_in.get("/?q=lantern", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="gallery")
    html = response.content.decode()
    assert 'class="card ' in html and "generate-form" not in html and "<html" not in html


def test_paging_keeps_the_filters(signed_in, user):
    for n in range(30):
        plain_clip(user, status=Clip.Status.FAILED, prompt=f"Failed lantern {n}")
        plain_clip(user, prompt=f"Ready lantern {n}")
    html = signed_in.get("/?status=failed").content.decode()
    assert html.count('class="card ') == 24
    oldest = Clip.objects.filter(status=Clip.Status.FAILED).order_by("-pk")[23].pk
    assert f"?before={oldest}&amp;status=failed" in html
    more = signed_in.get(f"/?before={oldest}&status=failed").content.decode()
    assert more.count('class="card ') == 6 and "Ready lantern" not in more


def test_gallery_query_count_does_not_grow_with_the_clips(signed_in, user):
    def queries():
        with CaptureQueriesContext(connection) as ctx:
            assert signed_in.get("/").status_code == 200
        return len(ctx.captured_queries)

    parent = plain_clip(user)
    for n in range(4):
        plain_clip(
            user,
            parent=parent,
            status=Clip.Status.RUNNING if n % 2 else Clip.Status.READY,
            first_frame=Asset.objects.create(owner=user, file="assets/x/a.png"),
        )
    queries()  # the first page reads the models' estimates, then the cache has them
    few = queries()
    for n in range(40):
        plain_clip(
            user,
            parent=parent,
            status=[Clip.Status.READY, Clip.Status.FAILED, Clip.Status.RUNNING][n % 3],
            first_frame=Asset.objects.create(owner=user, file="assets/x/a.png"),
        )
    assert queries() == few


def test_the_gallery_shows_one_card_per_chain_beside_single_clips(signed_in, user):
    paid = {"cost_actual": Decimal("12"), "cost_unit": "credits"}
    root = plain_clip(
        user,
        prompt="A paper lantern drifts over a dark lake",
        video_duration=4.0,
        thumbnail="clips/r/t.jpg",
        **paid,
    )
    step2 = plain_clip(user, parent=root, video_duration=4.0, thumbnail="clips/s/t.jpg", **paid)
    plain_clip(user, parent=root, prompt="An unused take", thumbnail="clips/u/t.jpg", **paid)
    step3 = plain_clip(
        user, parent=step2, status=Clip.Status.RUNNING, cost_estimate=Decimal("12"), cost_unit="credits"
    )
    single = plain_clip(user, prompt="A red kite over green hills")
    html = signed_in.get("/?show=chains").content.decode()
    assert "Your chains" in html and 'aria-current="page">Chains</a>' in html
    assert html.count(f'id="chain-{root.pk}"') == 1 and f'id="clip-{single.pk}"' in html
    assert f'id="clip-{step2.pk}"' not in html and f'id="clip-{step3.pk}"' not in html
    card = html[html.index(f'id="chain-{root.pk}"') :]
    card = card[: card.index("</article>")]
    assert "A paper lantern drifts over a dark lake</a></h2>" in card
    # The step still generating counts what it asked for; every take counts what it cost.
    assert "3 steps · 12 s · Cost so far: ≈ 48 credits (36 reported, 12 estimated)" in card
    assert f'src="/clips/{step2.pk}/thumbnail.jpg"' in card  # the latest picture of the sequence
    assert "1 generating" in card and f'hx-get="/clips/{root.pk}/chain/card/"' in card
    # The card polls itself until the chain is finished.
    Clip.objects.filter(pk=step3.pk).update(status=Clip.Status.READY, thumbnail="clips/3/t.jpg")
    again = signed_in.get(f"/clips/{root.pk}/chain/card/", HTTP_HX_REQUEST="true").content.decode()
    assert "hx-trigger" not in again and f'src="/clips/{step3.pk}/thumbnail.jpg"' in again
    # Search finds chains by title or first prompt; the clip filters are not offered here.
    signed_in.post(f"/clips/{root.pk}/chain/title/", {"title": "Night lantern"})
    found = signed_in.get(
        "/?show=chains&q=night", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="gallery"
    ).content.decode()
    assert f'id="chain-{root.pk}"' in found and f'id="clip-{single.pk}"' not in found
    assert 'name="status"' not in signed_in.get("/?show=chains&status=failed").content.decode()


def test_the_chain_gallery_query_count_does_not_grow_with_chains_or_steps(signed_in, user):
    def queries():
        with CaptureQueriesContext(connection) as ctx:
            assert signed_in.get("/?show=chains").status_code == 200
        return len(ctx.captured_queries)

    chain_of(user, 2, 1)
    plain_clip(user, prompt="A single clip")
    few = queries()
    for _ in range(6):
        chain_of(user, 6, 2)
    assert queries() == few
