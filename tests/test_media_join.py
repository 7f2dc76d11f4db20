"""Joining clips into one MP4 with sound: exact frames, stream copy and the re-encoded frames
around cuts, silence, corrupt and mixed sound, crossfades at seams, and sync along a chain.
Real encoded media throughout, made small here with PyAV."""

import os
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from studio import media

FPS = 24
RATE = 48000


def make_clip(
    path,
    frames=24,
    *,
    fps=FPS,
    size=(160, 96),
    sound="tone",
    rate=RATE,
    layout="stereo",
    pitch=330.0,
    flash=None,
    bframes=None,
    gop=None,
):
    """A small H.264 MP4 whose frames all differ. `sound`: "tone" (a steady tone), "beep"
    (silence with a 20 ms burst at frame `flash`), "corrupt" (AAC units of random bytes) or
    None. `flash`: that frame is white, the others dark."""
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        options = {"preset": "veryfast"}
        if bframes is not None:
            options["bframes"] = str(bframes)
        if gop is not None:
            options["g"] = str(gop)
        video.options = options
        audio = container.add_stream("aac", rate=rate, layout=layout) if sound else None
        channels = len(av.AudioLayout(layout).channels)
        total = round(frames * rate / fps)
        t = np.arange(total) / rate
        if sound == "beep":
            signal = np.zeros(total)
            onset = round(flash * rate / fps)
            signal[onset : onset + rate // 50] = 0.5 * np.sin(2 * np.pi * 1000 * t[: rate // 50])
        else:
            signal = 0.25 * np.sin(2 * np.pi * pitch * t)
        pcm = np.tile(signal.astype(np.float32), (channels, 1))
        written = 0
        for i in range(frames):
            level = 250 if i == flash else 40
            picture = Image.new("RGB", size, (level, (i * 9) % 200 + (level - 40) // 4, 80))
            for packet in video.encode(av.VideoFrame.from_image(picture)):
                container.mux(packet)
            upto = round((i + 1) * rate / fps)
            while (
                audio is not None and written + 1024 <= upto or (audio and i == frames - 1 and written < upto)
            ):
                piece = pcm[:, written : min(written + 1024, total)]
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece), format="fltp", layout=layout)
                frame.sample_rate, frame.pts = rate, written
                written += piece.shape[1]
                for packet in audio.encode(frame):
                    mux_audio(container, packet, sound == "corrupt")
        for packet in video.encode():
            container.mux(packet)
        if audio is not None:
            for packet in audio.encode(None):
                mux_audio(container, packet, sound == "corrupt")
    return path


def mux_audio(container, packet, corrupt):
    if corrupt:
        broken = av.Packet(os.urandom(packet.size))
        broken.pts, broken.dts, broken.duration = packet.pts, packet.dts, packet.duration
        broken.time_base, broken.stream = packet.time_base, packet.stream
        packet = broken
    container.mux(packet)


def pictures(path):
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24").astype(np.int16) for f in container.decode(video=0)]


def samples(path):
    with av.open(str(path)) as container:
        assert container.streams.audio[0].codec_context.sample_rate == RATE
        assert container.streams.audio[0].codec_context.channels == 2
        return np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)


def picture_difference(a, b):
    return float(np.abs(a - b).mean())


def silent(pcm):
    """Silence as AAC gives it back: a trace of the neighbouring sound's coding noise."""
    return np.abs(pcm).max() < 0.01 and np.sqrt((pcm**2).mean()) < 1e-3


def max_step(pcm, around, half=600):
    return float(np.abs(np.diff(pcm[:, around - half : around + half], axis=1)).max())


# --- Picture ----------------------------------------------------------------------------------


def test_a_plain_chain_is_stream_copied_with_its_sound(tmp_path):
    a = make_clip(tmp_path / "a.mp4", 24, pitch=300)
    b = make_clip(tmp_path / "b.mp4", 36, pitch=500)
    out = tmp_path / "out.mp4"
    result = media.join_videos([media.JoinPart(a), media.JoinPart(b)], out)
    assert (result.method, result.reason, result.frames, result.dropped) == ("copy", "", 60, 0)
    assert result.duration == pytest.approx(60 / FPS)
    assert result.has_audio and result.audio_duration == pytest.approx(60 / FPS, abs=1 / RATE)
    joined = pictures(out)
    assert [picture_difference(x, y) for x, y in zip(joined, pictures(a) + pictures(b))] == [0.0] * 60
    # The file's own sound is as long as its picture, within one frame.
    assert samples(out).shape[1] / RATE == pytest.approx(60 / FPS, abs=1 / FPS)


@pytest.mark.parametrize("keep", [10, 11, 12, 13])
def test_the_parent_ends_on_its_hand_off_frame_and_the_repeat_is_shown_once(tmp_path, keep):
    """Whatever frame type the cut lands on, the joined file holds exactly the kept frames;
    cuts inside a group re-encode a few frames, the rest stays a stream copy."""
    parent = make_clip(tmp_path / "parent.mp4", 24, bframes=3)
    child = make_clip(tmp_path / "child.mp4", 24, bframes=3, gop=6, pitch=400)
    out = tmp_path / "out.mp4"
    parts = [media.JoinPart(parent, keep_frames=keep), media.JoinPart(child, skip_frames=1)]
    result = media.join_videos(parts, out)
    assert result.method in ("copy", "smartcut") and result.frames == keep + 23 and result.dropped == 1
    expected = pictures(parent)[:keep] + pictures(child)[1:]
    joined = pictures(out)
    assert len(joined) == len(expected)
    for number, (got, want) in enumerate(zip(joined, expected)):
        neighbours = [expected[n] for n in (number - 1, number + 1) if 0 <= n < len(expected)]
        assert picture_difference(got, want) < 1.5, number
        assert all(picture_difference(got, want) < picture_difference(got, other) for other in neighbours)
    assert result.duration == pytest.approx((keep + 23) / FPS)
    assert samples(out).shape[1] / RATE == pytest.approx(result.duration, abs=1 / FPS)


def test_frames_re_encoded_around_a_cut_carry_their_own_parameter_sets(tmp_path):
    parent = make_clip(tmp_path / "parent.mp4", 24, bframes=3)
    child = make_clip(tmp_path / "child.mp4", 24, bframes=3)
    out = tmp_path / "out.mp4"
    result = media.join_videos(
        [media.JoinPart(parent, keep_frames=11), media.JoinPart(child, skip_frames=1)], out
    )
    assert result.method == "smartcut" and "stream copy" in result.reason
    with av.open(str(out)) as container:
        config = bytes(container.streams.video[0].codec_context.extradata)
    # One avc1 sample description listing the clips' parameter sets and the re-encoded ones.
    assert (
        config[0] == 1
        and config[5] & 0x1F == 2
        and config[3] == bytes(av.open(str(parent)).streams.video[0].codec_context.extradata)[3]
    )


def test_drop_seam_keeps_one_copy_of_the_repeated_picture(tmp_path):
    a = make_clip(tmp_path / "a.mp4", 24, bframes=0)
    b = make_clip(tmp_path / "b.mp4", 24, bframes=0)
    out = tmp_path / "out.mp4"
    result = media.join_videos([media.JoinPart(a), media.JoinPart(b, drop_seam=True)], out)
    # Without B-frames the parent's last frame is decoded last: leaving it out costs nothing.
    assert (result.method, result.frames, result.dropped) == ("copy", 47, 1)
    assert picture_difference(pictures(out)[23], pictures(b)[0]) == 0


def test_drop_seam_after_a_clip_ending_in_b_frames_re_encodes_only_its_last_frames(tmp_path):
    # x264 ends this clip with B-frames that refer to its last frame (checked below):
    # leaving that frame out re-encodes the few frames after the last clean point, not
    # the whole chain.
    a = make_clip(tmp_path / "a.mp4", 20, bframes=3)
    with av.open(str(a)) as container:
        times = [p.pts for p in container.demux(video=0) if p.size]
    assert times[-1] != max(times)  # the last frame shown is not the last decoded
    b = make_clip(tmp_path / "b.mp4", 24, bframes=3)
    out = tmp_path / "out.mp4"
    result = media.join_videos([media.JoinPart(a), media.JoinPart(b, drop_seam=True)], out)
    assert result.method == "smartcut" and (result.frames, result.dropped) == (43, 1)
    assert 1 <= int(result.reason.split()[0]) <= 3
    expected = pictures(a)[:19] + pictures(b)
    joined = pictures(out)
    assert len(joined) == 43 and max(picture_difference(x, y) for x, y in zip(joined, expected)) < 1.5


def test_clips_of_other_sizes_and_rates_are_re_encoded_to_the_first_clips_format(tmp_path):
    a = make_clip(tmp_path / "a.mp4", 24, size=(160, 96))
    b = make_clip(tmp_path / "b.mp4", 30, fps=30, size=(192, 108))
    out = tmp_path / "out.mp4"
    result = media.join_videos([media.JoinPart(a), media.JoinPart(b, skip_frames=1)], out)
    assert result.method == "reencode" and "differ" in result.reason
    info = media.probe(out)
    assert (info.width, info.height, info.fps) == (160, 96, 24.0)
    assert result.frames == 24 + 29 == media.frame_count(out)
    assert samples(out).shape[1] / RATE == pytest.approx(53 / FPS, abs=1 / FPS)


def test_a_hand_off_frame_outside_the_clip_is_refused(tmp_path):
    a = make_clip(tmp_path / "a.mp4", 12)
    with pytest.raises(media.MediaError, match="not in clip 1"):
        media.join_videos([media.JoinPart(a, keep_frames=13), media.JoinPart(a)], tmp_path / "out.mp4")


# --- Sound ------------------------------------------------------------------------------------


def test_a_clip_without_sound_plays_silence_of_its_exact_length(tmp_path):
    a = make_clip(tmp_path / "a.mp4", 24, pitch=300)
    quiet = make_clip(tmp_path / "quiet.mp4", 30, sound=None)
    c = make_clip(tmp_path / "c.mp4", 24, pitch=500)
    out = tmp_path / "out.mp4"
    result = media.join_videos([media.JoinPart(a), media.JoinPart(quiet), media.JoinPart(c)], out)
    assert result.silent_parts == [1] and "Clip 2 has no sound" in result.notes[0]
    pcm = samples(out)
    one, two = RATE, RATE + 30 * RATE // FPS  # where the silent clip begins and ends
    assert silent(pcm[:, one + 480 : two - 480])
    for loud in (pcm[:, 480 : one - 480], pcm[:, two + 480 : two + RATE - 480]):
        assert np.sqrt((loud**2).mean()) > 0.1
    assert pcm.shape[1] / RATE == pytest.approx(78 / FPS, abs=1 / FPS)


def test_seams_are_crossfaded_not_clicked(tmp_path):
    # Two tones that meet out of phase: butted together they would jump at the seam.
    a = make_clip(tmp_path / "a.mp4", 23, pitch=310)
    b = make_clip(tmp_path / "b.mp4", 24, pitch=470)
    c = make_clip(tmp_path / "c.mp4", 24, pitch=390, sound="tone")
    out = tmp_path / "out.mp4"
    media.join_videos([media.JoinPart(a), media.JoinPart(b, skip_frames=3), media.JoinPart(c)], out)
    pcm = samples(out)
    seams = [23 * RATE // FPS, (23 + 21) * RATE // FPS]
    for seam in seams:
        # The signal's normal step, on both sides, away from the crossfade.
        normal = max(max_step(pcm, seam - 3000, 2000), max_step(pcm, seam + 3000, 2000))
        assert max_step(pcm, seam) < 1.25 * normal
    # The test can fail: the same sounds butted together jump far beyond a normal step.
    butted = np.concatenate([samples(a)[:, : seams[0]], samples(b)[:, 3 * RATE // FPS :]], axis=1)
    assert max_step(butted, seams[0]) > 3 * max_step(butted, seams[0] + 3000, 2000)


def test_corrupt_sound_joins_as_silence_and_says_so(tmp_path):
    a = make_clip(tmp_path / "a.mp4", 24)
    broken = make_clip(tmp_path / "broken.mp4", 24, sound="corrupt")
    c = make_clip(tmp_path / "c.mp4", 24)
    out = tmp_path / "out.mp4"
    result = media.join_videos([media.JoinPart(a), media.JoinPart(broken), media.JoinPart(c)], out)
    assert result.silent_parts == [1] and any("clip 2 could not be read" in n for n in result.notes)
    pcm = samples(out)
    assert silent(pcm[:, RATE + 480 : 2 * RATE - 480])
    assert pcm.shape[1] / RATE == pytest.approx(3, abs=1 / FPS) and result.frames == 72


def test_sound_at_other_rates_and_layouts_is_resampled(tmp_path):
    clips = [
        make_clip(tmp_path / "a.mp4", 24, rate=44100, layout="mono"),
        make_clip(tmp_path / "b.mp4", 24),
        make_clip(tmp_path / "c.mp4", 24, rate=32000, layout="5.1"),
    ]
    out = tmp_path / "out.mp4"
    result = media.join_videos([media.JoinPart(c) for c in clips], out)
    assert result.silent_parts == [] and sum("converted to 48 kHz stereo" in n for n in result.notes) == 2
    pcm = samples(out)
    assert pcm.shape[1] / RATE == pytest.approx(3, abs=1 / FPS)
    for second in range(3):
        assert np.sqrt((pcm[:, second * RATE + 2000 : (second + 1) * RATE - 2000] ** 2).mean()) > 0.1


@pytest.mark.parametrize("way", ["copy", "smartcut", "reencode"])
def test_a_ten_clip_chain_stays_in_sync(tmp_path, way):
    """Each clip flashes and beeps at the same moment; at every seam of a 10-clip chain the
    beep is heard within one frame of the flash it belongs to."""
    clips = []
    for n in range(10):
        size = (192, 108) if way == "reencode" and n == 0 else (160, 96)
        clips.append(make_clip(tmp_path / f"{n}.mp4", 20 + n, sound="beep", flash=8 + n % 3, size=size))
    skip = 1 if way == "smartcut" else 0
    parts = [media.JoinPart(clips[0])] + [media.JoinPart(c, skip_frames=skip) for c in clips[1:]]
    out = tmp_path / "out.mp4"
    result = media.join_videos(parts, out)
    assert result.method == way
    frames = pictures(out)
    flashes = [n / FPS for n, f in enumerate(frames) if f.mean() > 120]
    pcm = np.abs(samples(out)[0])
    loud = np.flatnonzero(pcm > 0.1)
    beeps = [loud[0]] + [b for a, b in zip(loud, loud[1:]) if b - a > RATE // 10]
    assert len(flashes) == len(beeps) == 10
    for flash, beep in zip(flashes, beeps):
        assert abs(beep / RATE - flash) < 1 / FPS
    assert pcm.shape[0] / RATE == pytest.approx(result.duration, abs=1 / FPS)


def test_audio_duration_follows_the_video_timeline(tmp_path):
    a = make_clip(tmp_path / "a.mp4", 24)
    result = media.join_videos([media.JoinPart(a, keep_frames=7)], tmp_path / "out.mp4")
    assert result.frames == 7 and result.audio_duration == pytest.approx(7 / FPS, abs=1 / RATE)
    assert Fraction(result.duration).limit_denominator(1000) == Fraction(7, 24)
