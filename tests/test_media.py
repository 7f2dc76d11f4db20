"""PyAV and Pillow work: probing, frames by number and the frame strip, thumbnails, seam and
colour measures, colour matching, repeats in extend results, the simulator, image checks."""

import io
import math

import av
import numpy as np
import pytest
from django.test import override_settings
from PIL import Image, ImageFilter

from studio import media
from studio.providers.simulator import frame_size, render

from .conftest import TEST_SIMULATOR_HEIGHT
from .images import jpeg_bytes, png_bytes, striped_png
from .test_jobs import mean_abs_diff


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    with override_settings(SIMULATOR_HEIGHT=TEST_SIMULATOR_HEIGHT):  # before the per-test settings
        render(path, "A slow pan over a mountain lake", "16:9", 4, None)
    return path


@pytest.fixture
def default_simulator_size(settings):
    """The simulator's own 480 lines, for the tests that compare its pictures with full-size
    ones or check the shape it gives by default."""
    settings.SIMULATOR_HEIGHT = 480


def decode_all(path):
    with av.open(str(path)) as container:
        return [frame.to_image() for frame in container.decode(container.streams.video[0])]


def test_probe_reads_duration_size_and_codec(clip_path):
    info = media.probe(clip_path)
    assert (info.width, info.height, info.codec) == (*frame_size("16:9"), "h264")
    assert info.duration == pytest.approx(4.0, abs=0.05)


def test_last_frame_equals_the_last_decoded_frame(clip_path):
    frames = decode_all(clip_path)
    assert len(frames) == 96
    last = media.last_frame(clip_path)
    assert last.tobytes() == frames[-1].tobytes()
    # ...and it is really the end, not the frame before it.
    assert last.tobytes() != frames[-2].tobytes()


def test_last_frame_of_a_clip_shorter_than_the_seek_window(tmp_path):
    path = tmp_path / "short.mp4"
    render(path, "A blink", "1:1", 1, None)
    frames = decode_all(path)
    assert media.last_frame(path).tobytes() == frames[-1].tobytes()


@pytest.mark.parametrize(
    "ratio,expected", [("16:9", (640, 360)), ("9:16", (270, 480)), ("1:1", (480, 480)), ("4:3", (640, 480))]
)
def test_thumbnail_fits_the_box_and_keeps_the_shape(ratio, expected, default_simulator_size):
    image = Image.new("RGB", frame_size(ratio), (10, 20, 30))
    thumb = Image.open(io.BytesIO(media.thumbnail_jpeg(image)))
    assert thumb.format == "JPEG"
    assert thumb.size == expected


def test_thumbnail_of_a_large_frame_is_at_most_640_wide():
    thumb = Image.open(io.BytesIO(media.thumbnail_jpeg(Image.new("RGB", (1920, 1080)))))
    assert thumb.size == (640, 360)


def test_probe_refuses_a_file_that_is_not_a_video(tmp_path):
    path = tmp_path / "fake.mp4"
    path.write_bytes(b"not a video at all" * 100)
    with pytest.raises(media.MediaError):
        media.probe(path)


def test_probe_refuses_a_truncated_video(tmp_path, clip_path):
    path = tmp_path / "cut.mp4"
    path.write_bytes(clip_path.read_bytes()[:2000])
    with pytest.raises(media.MediaError):
        media.probe(path)


def test_rendered_clip_with_a_first_frame_starts_on_that_picture(tmp_path, default_simulator_size):
    start = tmp_path / "start.png"
    start.write_bytes(striped_png())
    path = tmp_path / "from-image.mp4"
    render(path, "It comes alive", "16:9", 2, start)
    first = media.first_frame(path)
    assert mean_abs_diff(first, Image.open(start)) < 4
    # ...and then it moves.
    assert mean_abs_diff(media.last_frame(path), Image.open(start)) > 4


def test_rendered_clip_has_the_requested_shape_and_length(tmp_path, default_simulator_size):
    path = tmp_path / "portrait.mp4"
    render(path, "Tall shot", "9:16", 2, None)
    info = media.probe(path)
    assert (info.width, info.height) == (270, 480)
    assert info.duration == pytest.approx(2.0, abs=0.05)


def test_check_image_reencodes_and_strips_metadata():
    image = Image.new("RGB", (64, 48), (1, 2, 3))
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # camera maker
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    checked = media.check_image(out.getvalue())
    assert (checked.width, checked.height, checked.extension) == (64, 48, "jpg")
    assert b"SecretCam" not in checked.content
    assert not Image.open(io.BytesIO(checked.content)).getexif()


def test_check_image_accepts_png_and_webp():
    assert media.check_image(png_bytes()).extension == "png"
    webp = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(webp, "WEBP")
    assert media.check_image(webp.getvalue()).extension == "png"


@pytest.mark.parametrize(
    "name,data,message",
    [
        (
            "svg",
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
            "complete JPEG, PNG or WebP",
        ),
        ("truncated jpeg", jpeg_bytes(size=(400, 300))[:600], "complete JPEG, PNG or WebP"),
        ("pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\n", "complete JPEG, PNG or WebP"),
    ],
)
def test_check_image_refuses_what_is_not_a_whole_image(name, data, message):
    with pytest.raises(media.MediaError, match=message):
        media.check_image(data)


def test_check_image_refuses_a_gif():
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "GIF")
    with pytest.raises(media.MediaError, match="JPEG, PNG or WebP"):
        media.check_image(out.getvalue())


def test_check_image_refuses_too_many_pixels(settings):
    settings.STUDIO_MAX_IMAGE_PIXELS = 100 * 100
    with pytest.raises(media.MediaError, match="megapixels"):
        media.check_image(png_bytes(size=(200, 200)))


def test_check_image_refuses_too_many_bytes(settings):
    settings.STUDIO_MAX_IMAGE_BYTES = 100
    with pytest.raises(media.MediaError, match="larger than"):
        media.check_image(png_bytes(size=(300, 300)))


def test_simulator_last_frame_carries_no_caption(tmp_path, default_simulator_size):
    """The next clip starts from this frame: the old caption must not be burnt into it."""
    start = tmp_path / "black.png"
    Image.new("RGB", (854, 480), (0, 0, 0)).save(start)
    path = tmp_path / "captioned.mp4"
    render(path, "WHITE CAPTION TEXT " * 5, "16:9", 2, start)
    middle = media.frame_at(path, 1.0)
    assert middle.crop((0, 400, 854, 480)).getextrema()[0][1] > 150  # caption visible mid-clip
    assert media.last_frame(path).getextrema()[0][1] < 40  # gone at the end


# --- Frames by number, the strip, sharpness ---------------------------------------------------


@pytest.fixture(scope="module")
def long_gop_clip(tmp_path_factory):
    """Several keyframes (every 10 frames), B-frames, and one blurred frame near the end."""
    path = tmp_path_factory.mktemp("gop") / "gop.mp4"
    size = (320, 180)
    base = Image.open(io.BytesIO(striped_png(size)))
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "g": "10", "bframes": "3"}
        for i in range(60):
            picture = base.transform(size, Image.Transform.AFFINE, (1, 0, -i * 3, 0, 1, 0))
            if i == BLURRED:
                picture = picture.filter(ImageFilter.GaussianBlur(3))
            for packet in stream.encode(av.VideoFrame.from_image(picture)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


BLURRED = 52


def test_frame_count_is_exact(long_gop_clip, clip_path):
    assert media.frame_count(long_gop_clip) == len(decode_all(long_gop_clip)) == 60
    assert media.frame_count(clip_path) == 96


def test_frame_at_index_is_that_frame_of_a_full_decode(long_gop_clip):
    frames = decode_all(long_gop_clip)
    for index in (0, 1, 9, 10, 11, 29, 30, 31, 47, 58, 59):
        assert media.frame_at_index(long_gop_clip, index).tobytes() == frames[index].tobytes(), index


def test_frame_at_index_outside_the_clip_is_refused(long_gop_clip):
    for index in (-1, 60, 1000):
        with pytest.raises(media.FrameOutOfRange, match="not in this clip: it has 60 frames"):
            media.frame_at_index(long_gop_clip, index)
    assert issubclass(media.FrameOutOfRange, IndexError)


def test_last_frame_of_a_clip_with_many_keyframes_equals_the_full_decode(long_gop_clip):
    assert media.last_frame(long_gop_clip).tobytes() == decode_all(long_gop_clip)[-1].tobytes()


def test_frame_strip_is_the_last_second_ending_on_the_true_last_frame(long_gop_clip):
    frames = decode_all(long_gop_clip)
    strip = media.frame_strip(long_gop_clip)
    assert [f.index for f in strip] == list(range(36, 60))  # 24 fps: a second is 24 frames
    assert strip[-1].image.tobytes() == frames[-1].tobytes()
    for frame in strip:
        assert frame.image.tobytes() == frames[frame.index].tobytes()
        assert frame.time == pytest.approx(frame.index / 24, abs=1e-6)
    # The blurred frame scores lowest; its neighbours, alike in content, score alike.
    scores = {f.index: f.sharpness for f in strip}
    assert min(scores, key=scores.get) == BLURRED
    assert scores[BLURRED] < 0.5 * min(scores[BLURRED - 1], scores[BLURRED + 1])


def test_frame_strip_has_at_least_min_frames_or_all_there_are(long_gop_clip, tmp_path):
    assert len(media.frame_strip(long_gop_clip, seconds=0.25)) == 12
    assert len(media.frame_strip(long_gop_clip, seconds=0.25, min_frames=20)) == 20
    short = tmp_path / "short.mp4"
    render(short, "A blink", "1:1", 1, None)
    strip = media.frame_strip(short, seconds=2)
    assert [f.index for f in strip] == list(range(24))


def test_frames_of_a_file_without_a_full_index_are_found_by_decoding(long_gop_clip, tmp_path):
    # Matroska indexes only its cues: frames are then counted and numbered from the start.
    path = tmp_path / "gop.mkv"
    with av.open(str(long_gop_clip)) as source, av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(video=0):
            if packet.size:
                packet.stream = stream
                out.mux(packet)
    frames = decode_all(long_gop_clip)
    with av.open(str(path)) as container:
        assert len(container.streams.video[0].index_entries) < 60
    assert media.frame_count(path) == 60
    assert media.last_frame(path).tobytes() == frames[-1].tobytes()
    assert media.frame_at_index(path, 33).tobytes() == frames[33].tobytes()
    assert [f.index for f in media.frame_strip(path)] == list(range(36, 60))


def test_sharpness_is_lower_for_a_blurred_picture():
    picture = Image.open(io.BytesIO(striped_png((200, 120))))
    assert media.sharpness(picture.filter(ImageFilter.GaussianBlur(2))) < 0.5 * media.sharpness(picture)
    assert media.sharpness(Image.new("RGB", (50, 50), (90, 90, 90))) == 0


# --- The simulator's sound, extend and end frame --------------------------------------------


def dominant_pitch(pcm):
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return np.argmax(spectrum) * 48000 / len(pcm)


def test_simulator_soundtrack_follows_the_picture_and_lasts_as_long(tmp_path):
    path = tmp_path / "sound.mp4"
    render(path, "A humming machine", "16:9", 4, None, audio=True)
    info = media.probe(path)
    assert (info.has_audio, info.audio_codec, info.audio_sample_rate, info.audio_channels) == (
        True,
        "aac",
        48000,
        2,
    )
    pcm = media.sound_samples(path)
    assert pcm.shape[1] / 48000 == pytest.approx(4.0, abs=1 / 24)
    with av.open(str(path)) as container:
        audio = container.streams.audio[0]
        assert float(audio.duration * audio.time_base) == pytest.approx(4.0, abs=1e-3)
    # The pitch follows the first shape across its orbit (see _procedural_frame): an octave
    # above 220 Hz at its right-most, falling as it swings left.
    for start in (0.0, 1.5, 2.5, 3.7):
        middle = start + 0.1
        position = 0.5 + 0.5 * math.cos(middle * 0.6)  # the shape's x, 0 (left) to 1 (right)
        pitch = dominant_pitch(pcm[0, int(start * 48000) : int(start * 48000) + 9600])
        assert pitch == pytest.approx(220 * 2**position, rel=0.03)
    # ...and its balance: louder on the right while the shape is right of centre.
    early, late = pcm[:, :48000], pcm[:, 3 * 48000 :]
    assert (
        np.abs(early[1]).mean() > np.abs(early[0]).mean() and np.abs(late[1]).mean() < np.abs(late[0]).mean()
    )


def test_simulator_without_audio_has_no_sound_stream(clip_path):
    assert not media.probe(clip_path).has_audio


def test_simulator_end_frame_is_the_last_picture(tmp_path, default_simulator_size):
    end = tmp_path / "end.png"
    end.write_bytes(striped_png())
    path = tmp_path / "to-end.mp4"
    render(path, "Towards the end picture", "16:9", 2, None, end_frame=end)
    assert mean_abs_diff(media.last_frame(path), Image.open(end)) < 3
    assert mean_abs_diff(media.frame_at(path, 0.5), Image.open(end)) > 20


def test_simulator_extend_starts_with_the_source_then_continues_from_its_last_frame(tmp_path):
    source = tmp_path / "source.mp4"
    render(source, "A slow pan over a mountain lake", "16:9", 1, None, audio=True)
    extended = tmp_path / "extended.mp4"
    render(extended, "The pan goes on", "16:9", 1, None, audio=True, extend_source=source)
    original, result = decode_all(source), decode_all(extended)
    assert len(result) == 48
    assert max(mean_abs_diff(a, b) for a, b in zip(original, result)) < 2
    assert mean_abs_diff(result[24], original[-1]) < 2  # the new segment starts where it ended
    assert mean_abs_diff(result[-1], original[-1]) > 4  # ...and moves on
    sound, repeated = media.sound_samples(extended), media.sound_samples(source)
    assert sound.shape[1] / 48000 == pytest.approx(2, abs=1 / 24)
    assert np.abs(sound[:, 4800:40000] - repeated[:, 4800:40000]).max() < 0.05  # its sound too


# --- Seams, drift and colour matching ---------------------------------------------------------


def graded(image, gain=(1.12, 1.0, 0.88), lift=8):
    """The same picture warmer and lifted: the drift a continuation typically shows."""
    array = np.asarray(image, dtype=np.float32) * np.array(gain) + lift
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def test_seam_figures_tell_a_smooth_seam_from_a_jump(clip_path, tmp_path):
    frames = decode_all(clip_path)
    smooth = media.seam_figures(frames[60], frames[61])
    assert not smooth.jumps and smooth.difference < media.SEAM_JUMP_DIFFERENCE
    other = tmp_path / "other.mp4"
    render(other, "Something else entirely", "16:9", 1, None)
    cut = media.seam_figures(frames[-1], media.first_frame(other))
    assert cut.jumps and cut.difference > 4 * media.SEAM_JUMP_DIFFERENCE
    drifted = media.seam_figures(frames[60], graded(frames[60]))
    assert drifted.jumps and drifted.colour_shift > media.SEAM_JUMP_COLOUR


def test_drift_grows_with_the_grade(clip_path):
    step1 = decode_all(clip_path)[10]
    assert media.drift(step1, step1) == 0
    assert media.drift(step1, graded(step1, (1.02, 1, 0.98), 2)) < media.DRIFT_WARN
    assert media.drift(step1, graded(step1)) > media.DRIFT_WARN


def colour_transfer(image: Image.Image, reference: Image.Image) -> Image.Image:
    """`image` through the correction colour_match_video fits from the two pictures (its
    .cube table holds the same function, sampled): the correction seen on one frame."""
    correction = media._fit_correction(image, reference)
    rgb = correction.rgb(np.asarray(image.convert("RGB"), dtype=np.float32))
    return Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))


def test_colour_transfer_undoes_a_drift_without_clipping(clip_path):
    reference = decode_all(clip_path)[40]
    drifted = graded(reference)
    before = media.seam_figures(reference, drifted)
    corrected = colour_transfer(drifted, reference)
    after = media.seam_figures(reference, corrected)
    assert after.difference < 0.5 * before.difference and after.colour_shift < 0.3 * before.colour_shift
    assert not after.jumps
    clipped = np.isin(np.asarray(corrected), (0, 255)).mean() - np.isin(np.asarray(drifted), (0, 255)).mean()
    assert clipped <= media.CLIP_LIMIT


def test_colour_transfer_holds_back_a_correction_that_would_clip():
    # A dark, flat picture asked to match a bright, contrasty one: the full transfer would
    # push much of it to white.
    dark = Image.fromarray(np.random.default_rng(1).integers(20, 60, (60, 80, 3)).astype(np.uint8))
    bright = Image.fromarray(np.random.default_rng(2).integers(120, 256, (60, 80, 3)).astype(np.uint8))
    corrected = np.asarray(colour_transfer(dark, bright))
    assert np.isin(corrected, (0, 255)).mean() <= media.CLIP_LIMIT
    assert corrected.mean() > np.asarray(dark).mean() + 20  # ...and still moves towards it


def test_colour_match_video_corrects_every_frame_and_keeps_the_sound(tmp_path):
    parent = tmp_path / "parent.mp4"
    render(parent, "A lantern over the lake", "16:9", 1, None, audio=True)
    handoff = media.last_frame(parent)
    graded(handoff).save(tmp_path / "drifted.png")
    child = tmp_path / "child.mp4"
    render(child, "The lantern drifts", "16:9", 1, tmp_path / "drifted.png", audio=True)
    out = tmp_path / "matched.mp4"
    progress = []
    result = media.colour_match_video(child, handoff, out, progress=progress.append)
    assert result.after < 0.5 * result.before and result.clipped <= media.CLIP_LIMIT
    assert media.seam_figures(handoff, media.first_frame(child)).jumps
    assert not media.seam_figures(handoff, media.first_frame(out)).jumps
    assert media.frame_count(out) == media.frame_count(child) and progress[-1] == 1.0
    # The same correction on every frame: the last frame moves as much as the first.
    child_last, out_last = media.last_frame(child), media.last_frame(out)
    assert media.drift(handoff, out_last) < 0.5 * media.drift(handoff, child_last)
    with av.open(str(child)) as a, av.open(str(out)) as b:
        assert [bytes(p) for p in a.demux(audio=0)] == [bytes(p) for p in b.demux(audio=0)]


# --- Hand-off: strip -> next clip -> join ---------------------------------------------------


def test_the_next_clip_starts_on_the_chosen_hand_off_frame_and_joins_without_a_stutter(tmp_path):
    parent = tmp_path / "parent.mp4"
    render(parent, "A kite over the dunes", "16:9", 2, None, audio=True)
    strip = media.frame_strip(parent)
    chosen = strip[-7]  # not the last: the creator picked an earlier, sharper frame
    handoff = media.frame_at_index(parent, chosen.index)
    assert handoff.tobytes() == chosen.image.tobytes()
    handoff.save(tmp_path / "handoff.png")
    child = tmp_path / "child.mp4"
    render(child, "The kite climbs", "16:9", 2, tmp_path / "handoff.png", audio=True)
    assert mean_abs_diff(media.first_frame(child), handoff) < 2

    out = tmp_path / "chain.mp4"
    parts = [media.JoinPart(parent, keep_frames=chosen.index + 1), media.JoinPart(child, skip_frames=1)]
    result = media.join_videos(parts, out)
    joined, child_frames = decode_all(out), decode_all(child)
    assert len(joined) == result.frames == chosen.index + 1 + 47
    # The parent ends on the hand-off frame; the next picture is the child's second frame:
    # the repeated picture is shown once.
    assert mean_abs_diff(joined[chosen.index], handoff) < 1.5
    assert mean_abs_diff(joined[chosen.index + 1], child_frames[1]) < 1.5
    assert mean_abs_diff(joined[chosen.index + 1], handoff) > mean_abs_diff(joined[chosen.index], handoff)
    assert result.has_audio and result.audio_duration == pytest.approx(result.duration, abs=1 / 48000)


# --- Extend results that repeat their source ------------------------------------------------


def test_an_extend_result_that_repeats_its_source_is_detected(tmp_path):
    source = tmp_path / "source.mp4"
    render(source, "A slow pan over a mountain lake", "16:9", 2, None, audio=True)
    extended = tmp_path / "extended.mp4"
    render(extended, "The pan goes on", "16:9", 1, None, audio=True, extend_source=source)
    assert media.frame_count(extended) == 48 + 24
    assert media.repeated_source_frames(source, extended, requested_seconds=1) == 48
    assert media.repeated_source_frames(source, extended) == 48
    # Joined after its source, the source plays once.
    out = tmp_path / "chain.mp4"
    result = media.join_videos([media.JoinPart(source), media.JoinPart(extended, skip_frames=48)], out)
    assert result.frames == 72 and result.dropped == 48


def test_an_extend_result_with_only_the_new_segment_is_not_mistaken(tmp_path):
    source = tmp_path / "source.mp4"
    render(source, "A slow pan over a mountain lake", "16:9", 2, None)
    media.last_frame(source).save(tmp_path / "last.png")
    continued = tmp_path / "continued.mp4"
    render(continued, "The pan goes on", "16:9", 3, tmp_path / "last.png")
    assert media.repeated_source_frames(source, continued, requested_seconds=3) == 0
    assert media.repeated_source_frames(source, continued) == 0
    # A result as long as source + requested but starting elsewhere is no repeat either.
    other = tmp_path / "other.mp4"
    render(other, "Another place", "16:9", 3, None)
    assert media.repeated_source_frames(source, other, requested_seconds=1) == 0
