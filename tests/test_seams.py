"""Seams (issue 12) in the studio itself: the hand-off frame a creator picks, the strip it is
picked from, the seam figures and drift the worker measures, colour matching, the sound of
the joined chain, and extend results that hold their source. Real encoded media throughout
(the simulator renders H.264 with AAC, 240 lines in the tests); nothing of PyAV is mocked."""

import os
import re
from pathlib import Path

import av
import numpy as np
import pytest
from django.core.files.base import ContentFile
from PIL import Image

from studio import jobs, media
from studio.models import Asset, ChainExport, ChainTree, Clip, SeamView, sequence_cuts

from .conftest import run_enqueued
from .test_jobs import mean_abs_diff
from .test_views import ready_clip

pytestmark = pytest.mark.django_db

FPS = 24
FRAMES = 4 * FPS  # a 4 s clip of the simulator's cinema model


def frames_of(path) -> list[Image.Image]:
    with av.open(str(path)) as container:
        return [frame.to_image() for frame in container.decode(container.streams.video[0])]


def run_worker(enqueued, capture) -> None:
    """Run the captured tasks, and the tasks they enqueue once their transactions commit."""
    while enqueued:
        with capture(execute=True):
            run_enqueued(enqueued)


def joined(user, clips) -> ChainExport:
    export = jobs.start_export(user, clips)
    jobs.export_chain(export.pk)
    export.refresh_from_db()
    assert export.status == ChainExport.Status.READY, export.error
    return export


def graded(image: Image.Image, amount: float = 0.12) -> Image.Image:
    """Warmer, lifted and flatter by `amount`: the colour drift a continuation can show."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    out = (rgb - 128) * (1 - amount / 2) * np.array([1 + amount, 1.0, 1 - amount]) + 128 + 100 * amount
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def image_asset(user, image: Image.Image) -> Asset:
    asset = Asset(owner=user, width=image.width, height=image.height, original_name="drifted.png")
    asset.file.save("drifted.png", ContentFile(media.png_bytes(image)), save=True)
    return asset


def continue_form(parent, **fields):
    return {
        "model": "simulator:cinema",
        "prompt": "The lantern rises into falling snow",
        "aspect_ratio": "16:9",
        "duration": "4",
        "start_mode": "first_frame",
        "parent": parent.pk,
        "first_frame_asset": parent.last_frame_id,
        **fields,
    }


@pytest.fixture
def root(user, enqueued):
    return ready_clip(user, prompt="A paper lantern drifts over a dark lake", generate_audio=True)


# --- The strip and the hand-off frame --------------------------------------------------------


def test_finishing_keeps_the_last_second_as_a_strip_the_picker_serves(signed_in, root):
    strip = root.strip
    assert [e["index"] for e in strip] == list(range(FRAMES - FPS, FRAMES))  # >= 12 frames, to the last
    sharpest = max(strip, key=lambda e: e["sharpness"])["index"]
    response = signed_in.get(f"/clips/{root.pk}/strip/{FRAMES - 1}.jpg")
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    picture = Image.open(Path(root.video.storage.path(strip[-1]["name"])))
    assert mean_abs_diff(picture, media.last_frame(Path(root.video.path))) < 3  # the true last frame
    assert signed_in.get(f"/clips/{root.pk}/strip/3.jpg").status_code == 404  # not in the strip

    html = signed_in.get(f"/clips/{root.pk}/continue/").content.decode()
    radios = re.findall(r'<input type="radio" name="handoff_frame" value="(\d+|any)"( checked)?', html)
    assert [int(v) for v, _ in radios if v != "any"] == [e["index"] for e in strip]
    assert [v for v, checked in radios if checked] == [str(FRAMES - 1)]  # the true last frame chosen
    tile = html[html.index(f'value="{sharpest}"') :].split("</label>", 1)[0]
    assert "sharpest" in tile
    assert 'name="handoff_any"' in html and "Continue from this frame" in html


def test_the_next_clip_starts_on_the_chosen_hand_off_frame(signed_in, user, root, enqueued):
    response = signed_in.post("/generate/", continue_form(root, handoff_frame="80"))
    assert response.status_code == 302
    child = Clip.objects.get(parent=root)
    assert child.handoff_frame == 80 and child.first_frame_id is None  # the worker takes the picture
    jobs.submit_clip(child.pk)  # the worker decodes the frame, then sends the clip
    child.refresh_from_db()
    assert child.first_frame.source == Asset.Source.HANDOFF_FRAME
    jobs.attach_handoff_frame(child)  # safe to run twice: one picture
    assert Asset.objects.filter(source=Asset.Source.HANDOFF_FRAME).count() == 1

    chosen = media.frame_at_index(Path(root.video.path), 80)
    assert mean_abs_diff(Image.open(child.first_frame.file.path), chosen) == 0  # exact, lossless
    finished = ready_clip(user, parent=root, handoff_frame=80, prompt="The lantern rises")
    assert mean_abs_diff(media.first_frame(Path(finished.video.path)), chosen) < 2


def test_continue_from_any_frame_of_the_clip_by_its_number(signed_in, root, enqueued):
    response = signed_in.post("/generate/", continue_form(root, handoff_frame="any", handoff_any="12"))
    assert response.status_code == 302
    assert Clip.objects.get(parent=root).handoff_frame == 12


@pytest.mark.parametrize("sent", [{"handoff_frame": "any", "handoff_any": "500"}, {"handoff_frame": "96"}])
def test_a_hand_off_frame_outside_the_clip_is_refused_beside_the_field(signed_in, root, sent):
    response = signed_in.post("/generate/", continue_form(root, **sent), HTTP_HX_REQUEST="true")
    assert response.status_code == 422
    html = response.content.decode()
    number = sent.get("handoff_any") or sent["handoff_frame"]
    message = f"Frame {number} is not in clip #{root.pk}: it has {FRAMES} frames, numbered 0 to {FRAMES - 1}."
    errors = html[html.index('class="field-errors handoff-errors"') :]
    assert message in errors.split("</div>", 1)[0]
    assert not Clip.objects.filter(parent=root).exists()

    response = signed_in.post(f"/clips/{root.pk}/chain/continue/", {"prompt": "The lantern rises", **sent})
    assert response.status_code == 422 and message in response.content.decode()
    assert not Clip.objects.filter(parent=root).exists()


def test_the_join_ends_the_parent_on_the_hand_off_frame_and_shows_the_repeat_once(user, root):
    child = ready_clip(user, parent=root, handoff_frame=80, prompt="The lantern rises into snow")
    cuts = sequence_cuts([root, child])
    assert [(c.keep_frames, c.skip_frames) for c in cuts] == [(81, 0), (None, 1)]
    export = joined(user, [root, child])
    assert export.dropped_frames == 1
    out = frames_of(export.file.path)
    parent_frames, child_frames = frames_of(root.video.path), frames_of(child.video.path)
    assert len(out) == 81 + FRAMES - 1
    # Frames 0-79 of the parent, the hand-off picture once, then the child from its second
    # frame. The picture shown once may be either copy of it (the parent's frame 80 or the
    # child's re-encoded frame 0), so it is found as the nearest of the parent's frames.
    assert mean_abs_diff(out[79], parent_frames[79]) < 1.5
    around = range(76, FRAMES)
    assert min(around, key=lambda i: mean_abs_diff(out[80], parent_frames[i])) == 80
    assert mean_abs_diff(out[80], parent_frames[80]) < 2.5
    assert mean_abs_diff(out[81], child_frames[1]) < 1.5
    assert mean_abs_diff(out[81], parent_frames[80]) > mean_abs_diff(out[80], parent_frames[80])
    # The sequence player plays the same cut.
    assert cuts[0].end == pytest.approx(81 / FPS) and cuts[1].start == pytest.approx(1 / FPS)


# --- Seam figures and drift ---------------------------------------------------------------------


def test_seam_figures_are_stored_by_the_worker_and_a_jump_is_flagged(signed_in, user, root):
    smooth = ready_clip(user, parent=root, handoff_frame=FRAMES - 1, prompt="The lantern rises")
    seam = smooth.seam
    assert seam is not None and not seam.jumps and seam.difference < 2
    # Drift against step 1's first frame: new content moves it too (a text-started clip's
    # orbiting shapes), so it warns only from step 3 on.
    assert seam.parent_frame == FRAMES - 1 and smooth.figures["drift"] >= 0
    jobs.measure_clip(smooth.pk)  # safe to run twice: the same videos, nothing measured again
    assert Clip.objects.get(pk=smooth.pk).figures == smooth.figures

    drifted = image_asset(user, graded(media.last_frame(Path(root.video.path))))
    jump = ready_clip(user, parent=root, first_frame=drifted, handoff_frame=FRAMES - 1, prompt="Another take")
    assert jump.seam.jumps and jump.seam.jumps_colour
    assert jump.seam.colour_shift > media.SEAM_JUMP_COLOUR

    html = signed_in.get(f"/clips/{jump.pk}/chain/").content.decode()
    seam_html = html[html.index('id="seam-2"') :].split("</section>", 1)[0]
    assert "Visible jump" in seam_html and "seam--jump" in html
    assert f'src="/clips/{jump.pk}/seam/before.jpg' in seam_html
    assert signed_in.get(f"/clips/{jump.pk}/seam/before.jpg").status_code == 200
    assert signed_in.get(f"/clips/{jump.pk}/seam/after.jpg").status_code == 200
    # The thresholds are said in the help text.
    assert "more than 5 (mean difference, 0–255)" in html and "ΔE 2.3" in html and "above 3.5" in html


def test_drift_warns_from_the_third_step_on_above_its_threshold():
    wandered = SeamView({"difference": 1.0, "colour_shift": 0.5, "drift": media.DRIFT_WARN + 0.5})
    assert not wandered.drift_warns(2) and wandered.drift_warns(3) and wandered.drift_warns(5)
    assert not SeamView({"difference": 1.0, "drift": media.DRIFT_WARN - 0.5}).drift_warns(4)


# --- Colour match -----------------------------------------------------------------------------------


def raising(error):
    def fail(*args, **kwargs):
        raise error

    return fail


# What a creator reads when a task fails: a fault in the file itself in its own words; any
# other error as the studio's, its details in the log only.
FAILURES = [
    (media.MediaError("The parent's video could not be read."), "The parent's video could not be read."),
    (RuntimeError("disk full at /srv/studio"), "because of an error in the studio."),
]


@pytest.mark.parametrize("error,shown", FAILURES)
def test_a_colour_match_that_fails_says_why_and_the_take_keeps_its_own_video(
    signed_in, user, root, enqueued, monkeypatch, caplog, django_capture_on_commit_callbacks, error, shown
):
    drifted = image_asset(user, graded(media.last_frame(Path(root.video.path))))
    child = ready_clip(
        user, parent=root, first_frame=drifted, handoff_frame=FRAMES - 1, prompt="Drifted take"
    )
    with django_capture_on_commit_callbacks(execute=True):
        signed_in.post(f"/clips/{child.pk}/colour/", {"chain": root.pk, "match": "1"})
    monkeypatch.setattr(media, "colour_match_video", raising(error))
    jobs.match_colour(child.pk)
    child.refresh_from_db()
    assert child.colour_state == Clip.ColourState.FAILED and child.colour_error.endswith(shown)
    assert not child.plays_matched and not child.matched_video
    assert "disk full" not in child.colour_error
    assert ("colour match failed" in caplog.text) == isinstance(error, RuntimeError)


@pytest.mark.parametrize("error,shown", FAILURES)
def test_a_join_that_fails_says_why(user, root, enqueued, monkeypatch, caplog, error, shown):
    child = ready_clip(user, parent=root, first_frame=root.last_frame, prompt="The lantern rises")
    export = jobs.start_export(user, [root, child])
    monkeypatch.setattr(media, "join_videos", raising(error))
    jobs.export_chain(export.pk)
    export.refresh_from_db()
    assert export.status == ChainExport.Status.FAILED and export.error.endswith(shown)
    assert export.finished_at is not None and not export.file and "disk full" not in export.error
    assert (f"chain export {export.pk} failed" in caplog.text) == isinstance(error, RuntimeError)


def test_colour_match_lowers_the_seam_difference_and_the_join_uses_the_corrected_copy(
    signed_in, user, root, enqueued, django_capture_on_commit_callbacks
):
    drifted = image_asset(user, graded(media.last_frame(Path(root.video.path))))
    child = ready_clip(
        user, parent=root, first_frame=drifted, handoff_frame=FRAMES - 1, prompt="Drifted take"
    )
    before = child.seam
    assert before.jumps
    enqueued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_in.post(
            f"/clips/{child.pk}/colour/", {"chain": root.pk, "match": "1"}, HTTP_HX_REQUEST="true"
        )
    assert response.status_code == 200 and "Waiting to match the colour" in response.content.decode()
    assert "The colour of clip" in signed_in.get(f"/clips/{child.pk}/chain/").content.decode()  # join waits
    assert enqueued == [("studio.jobs.match_colour", (child.pk,))]
    run_worker(enqueued, django_capture_on_commit_callbacks)  # the match, then the measurements
    child.refresh_from_db()
    assert child.plays_matched and child.colour_state == Clip.ColourState.READY
    name = child.matched_video.name
    jobs.match_colour(child.pk)  # safe to run twice: the copy is up to date
    child.refresh_from_db()
    assert child.matched_video.name == name

    after = child.seam
    assert after.difference < 0.5 * before.difference and not after.jumps
    assert after.original["difference"] == pytest.approx(before.difference, abs=0.01)
    html = signed_in.get(f"/clips/{child.pk}/chain/").content.decode()
    assert f"/clips/{child.pk}/played.mp4?v=" in html  # the sequence player plays the copy

    export = joined(user, [root, child])
    out = frames_of(export.file.path)
    matched, original = frames_of(child.matched_video.path), frames_of(child.video.path)
    seam_at = len(out) - FRAMES + 1
    assert mean_abs_diff(out[seam_at], matched[1]) < 1.5
    assert mean_abs_diff(out[seam_at], matched[1]) < mean_abs_diff(out[seam_at], original[1])

    # Undone: the clip plays its own video again, and is measured again.
    with django_capture_on_commit_callbacks(execute=True):
        signed_in.post(f"/clips/{child.pk}/colour/", {"chain": root.pk, "match": "0"})
    run_worker(enqueued, django_capture_on_commit_callbacks)
    child.refresh_from_db()
    assert not child.plays_matched and not child.matched_video and child.seam.jumps
    assert not Path(matched_path := Path(export.file.storage.path(name))).exists(), matched_path


def test_matching_the_whole_chain_corrects_each_step_towards_the_corrected_one_before(
    signed_in, user, root, enqueued, django_capture_on_commit_callbacks
):
    first = image_asset(user, graded(media.last_frame(Path(root.video.path)), 0.08))
    step2 = ready_clip(user, parent=root, first_frame=first, handoff_frame=FRAMES - 1, prompt="Step two")
    second = image_asset(user, graded(media.last_frame(Path(step2.video.path)), 0.08))
    step3 = ready_clip(user, parent=step2, first_frame=second, handoff_frame=FRAMES - 1, prompt="Step three")
    enqueued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        signed_in.post(f"/clips/{root.pk}/chain/colour/", {"chain": root.pk, "match": "1"})
    run_worker(enqueued, django_capture_on_commit_callbacks)
    step2.refresh_from_db()
    step3.refresh_from_db()
    assert step2.plays_matched and step3.plays_matched
    # Step 3 was matched to step 2 as the sequence plays it (the corrected copy).
    assert step3.matched_for == f"{step2.matched_video.name}#{FRAMES - 1}"
    assert not step2.seam.jumps and not step3.seam.jumps
    assert step3.seam.drift < step3.seam.original["drift"]


# --- Sound ---------------------------------------------------------------------------------------


def corrupt_sound(path: Path) -> None:
    """Replace every AAC unit of a video with random bytes (the picture stays as it was)."""
    fixed = path.with_name("corrupt.mp4")
    with av.open(str(path)) as source, av.open(str(fixed), "w", format="mp4") as out:
        video = out.add_stream_from_template(source.streams.video[0])
        audio = out.add_stream_from_template(source.streams.audio[0])
        for packet in source.demux():
            if not packet.size:
                continue
            if packet.stream.type == "audio":
                broken = av.Packet(os.urandom(packet.size))
                broken.pts, broken.dts, broken.duration = packet.pts, packet.dts, packet.duration
                broken.time_base, packet = packet.time_base, broken
                packet.stream = audio
            else:
                packet.stream = video
            out.mux(packet)
    fixed.replace(path)


def sound_of(path) -> tuple[float, float] | None:
    """(audio seconds, video seconds) of a file, or None when it has no audio stream."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        video = container.streams.video[0]
        samples = sum(frame.samples for frame in container.decode(container.streams.audio[0]))
        return samples / media.AUDIO_RATE, float(video.duration * video.time_base)


def test_the_joined_sound_lasts_as_long_as_the_picture_and_a_silent_step_plays_silence(signed_in, user, root):
    silent = ready_clip(user, parent=root, handoff_frame=70, prompt="The lantern, quietly")
    assert sound_of(silent.video.path) is None
    export = joined(user, [root, silent])
    audio, video = sound_of(export.file.path)
    assert abs(audio - video) < 1 / FPS
    assert export.has_audio and export.silent_parts == [{"part": 1, "why": "none"}]
    assert export.audio_duration == pytest.approx(video, abs=1 / FPS)
    html = signed_in.get(f"/exports/{export.pk}/").content.decode()
    assert "Sound: yes, AAC 48 kHz stereo" in html
    assert f"Step 2 (clip #{silent.pk}) has no sound: silence was inserted for its length." in html
    assert re.search(r"by stream copy|smart cut|re-encoded", html)


def test_a_clip_whose_sound_is_corrupt_joins_with_silence_and_the_export_says_so(signed_in, user, root):
    broken = ready_clip(
        user, parent=root, handoff_frame=FRAMES - 1, prompt="Broken sound", generate_audio=True
    )
    corrupt_sound(Path(broken.video.path))
    export = joined(user, [root, broken])
    assert export.silent_parts == [{"part": 1, "why": "corrupt"}]
    audio, video = sound_of(export.file.path)
    assert abs(audio - video) < 1 / FPS
    html = signed_in.get(f"/exports/{export.pk}/").content.decode()
    assert "its sound could not be read, so silence was inserted in its place" in html


# --- Extend -------------------------------------------------------------------------------------


def test_an_extend_result_that_holds_its_source_is_found_and_the_source_joined_once(
    signed_in, user, root, enqueued
):
    response = signed_in.post(
        "/generate/",
        {
            "model": "simulator:cinema",
            "prompt": "The lantern drifts on past the pier",
            "aspect_ratio": "16:9",
            "duration": "4",
            "start_mode": "extend_video",
            "extend_video": f"clip:{root.pk}",
            "generate_audio": "on",
        },
    )
    assert response.status_code == 302
    extended = Clip.objects.get(parent=root)
    assert extended.extend_video.source == Asset.Source.CLIP_VIDEO and extended.generate_audio
    ready = ready_clip(user, parent=root, extend_video=root, prompt="The lantern drifts on")
    assert ready.video_frames == 2 * FRAMES and ready.repeated_frames == FRAMES
    assert [(c.skip_frames, c.keep_frames) for c in sequence_cuts([root, ready])] == [
        (0, None),
        (FRAMES, None),
    ]
    assert ChainTree.of(root).seconds == pytest.approx(8.0)
    export = joined(user, [root, ready])
    assert len(frames_of(export.file.path)) == 2 * FRAMES  # the source once, then the new seconds
    assert export.has_audio
