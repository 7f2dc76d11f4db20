"""The offline simulator: a provider that renders real H.264 MP4s on this machine.

It behaves like a hosted service (submit returns a job id, polls say "running" until the
job is done, results are downloaded), so the whole studio, its tests included, runs the real
flow with no key and no network. Its "service side" keeps each job in a folder under
MEDIA_ROOT/simulator/<job id>/.

That folder is the simulator's own local scratch area, on purpose outside the studio's
storage (which may be a bucket): like a hosted service, it takes its own copy of a first
frame (read through the storage) and hands results out by address. Submit and poll must
therefore see the same disk: with workers on several machines, disable the simulator
(SIMULATOR_ENABLED=false) or give them a shared MEDIA_ROOT (README).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import shutil
import textwrap
import time
import uuid
from decimal import Decimal
from pathlib import Path

import av
import numpy as np
from django.conf import settings
from PIL import Image, ImageDraw, ImageFont

from .. import media
from .base import ModelSpec, Provider, ProviderError, RemoteStatus, Submission

FPS = 24

FREE_NOTE = "Free: the offline simulator renders on this computer."

MODELS = [
    ModelSpec(
        provider="simulator",
        key="cinema",
        label="Sim Cinema · offline preview",
        aspect_ratios=("16:9", "9:16"),
        durations=(4, 6, 8),
        first_frame=True,
        # As Veo 3.1 does: a soundtrack on request, and extending a video (the result holds
        # the source clip, then the new seconds: the studio finds and shows the source once).
        generate_audio=True,
        extend_video=True,
        cost_per_second=Decimal("0"),
        free_note=FREE_NOTE,
        description=(
            "Offline preview with the options of Veo 3.1 (sound, extend): renders on this computer in "
            "seconds, free."
        ),
    ),
    ModelSpec(
        provider="simulator",
        key="motion",
        label="Sim Motion · offline preview",
        aspect_ratios=("16:9", "9:16", "1:1", "3:4", "4:3"),
        durations=(5, 8, 10),
        first_frame=True,
        cost_per_second=Decimal("0"),
        free_note=FREE_NOTE,
        description="Offline preview with the options of PixVerse 5.5: renders on this computer in seconds, free.",
    ),
]


def frame_size(aspect_ratio: str) -> tuple[int, int]:
    """Width and height for a ratio like "16:9", SIMULATOR_HEIGHT lines tall (480 unless
    set: small on purpose, so encoding stays around a second per clip, NOTES.md), both
    even (H.264)."""
    height = settings.SIMULATOR_HEIGHT
    w, h = (int(part) for part in aspect_ratio.split(":"))
    width = int(round(height * w / h / 2)) * 2
    return width, height


class SimulatorProvider(Provider):
    name = "simulator"
    label = "Offline simulator (free, no key needed)"
    vendor = "the offline simulator"
    poll_interval = 1.0
    # A job waiting to render can be stopped, as a hosted service with a cancel would.
    can_cancel = True

    @property
    def typical_seconds(self) -> float:
        # The pause it takes before rendering, then about a second to render and copy.
        return float(settings.SIMULATOR_DELAY_SECONDS) + 2.0

    def is_enabled(self) -> bool:
        return settings.SIMULATOR_ENABLED

    def setup_help(self) -> str:
        return (
            "Renders real MP4 previews on this computer, free and with no key or network: for "
            "trying the studio and shaping a chain before spending credits. Switch it with "
            "SIMULATOR_ENABLED."
        )

    def models(self) -> list[ModelSpec]:
        return list(MODELS)

    @property
    def root(self) -> Path:
        # Local scratch of the simulated service, not the studio's media storage (see above).
        return Path(settings.MEDIA_ROOT) / "simulator"

    def submit(self, submission: Submission) -> str:
        """Accept the job and render it now, in the submit task. Rendering takes CPU seconds;
        done here it runs in a worker of its own and never inside the poll sweep, where it
        would hold back every other clip's poll. Polls only read the job's folder."""
        # A hosted service takes a moment to accept a job; so does this one.
        time.sleep(settings.SIMULATOR_DELAY_SECONDS)
        job_id = uuid.uuid4().hex
        job_dir = self.root / job_id
        job_dir.mkdir(parents=True)
        job = {
            "prompt": submission.prompt,
            "model": submission.model.key,
            "aspect_ratio": submission.aspect_ratio,
            "duration": submission.duration,
            "first_frame": None,
            "audio": bool(submission.generate_audio),
            "extend_video": None,
            "error": "",
        }
        first = None
        if submission.first_frame is not None:
            # Like a hosted service fetching the image: take our own copy at submit time.
            first = job_dir / "first_frame.png"
            with Image.open(io.BytesIO(submission.first_frame.read_bytes())) as image:
                image.convert("RGB").save(first, "PNG")
            job["first_frame"] = first.name
        source = None
        if submission.extend_video is not None:
            source = job_dir / "extend_source.mp4"
            source.write_bytes(submission.extend_video.read_bytes())
            job["extend_video"] = source.name
        partial = job_dir / f"video.{uuid.uuid4().hex}.part.mp4"
        try:
            render(
                partial,
                submission.prompt,
                submission.aspect_ratio,
                submission.duration,
                first,
                audio=bool(submission.generate_audio),
                extend_source=source,
            )
            partial.replace(job_dir / "video.mp4")  # atomic: a poll never sees half a file
        except Exception as exc:  # the renderer's failure is the job's failure, seen by the poll
            partial.unlink(missing_ok=True)
            job["error"] = f"Rendering failed: {exc}"
        # "Generating" lasts the simulated delay from here, as a hosted job would.
        job["created"] = time.time()
        (job_dir / "job.json").write_text(json.dumps(job))
        return job_id

    def poll(self, remote_id: str) -> RemoteStatus:
        job_dir = self.root / remote_id
        try:
            job = json.loads((job_dir / "job.json").read_text())
        except (FileNotFoundError, ValueError):
            raise ProviderError("The simulator has no record of this job.", permanent=True)
        if job.get("cancelled"):
            return RemoteStatus(RemoteStatus.FAILED, error="The job was cancelled.")
        if time.time() - job["created"] < settings.SIMULATOR_DELAY_SECONDS:
            return RemoteStatus(RemoteStatus.RUNNING)
        if job.get("error") or not (job_dir / "video.mp4").exists():
            return RemoteStatus(
                RemoteStatus.FAILED, error=job.get("error") or "The simulator lost this clip."
            )
        return RemoteStatus(
            RemoteStatus.SUCCEEDED,
            video_url=f"simulator://{remote_id}/video.mp4",
            cost=Decimal("0"),
        )

    def cancel(self, remote_id: str) -> None:
        """Stop a job while it is still "generating"; one delivered cannot be taken back.
        The picture is rendered at submit, but like a hosted job it counts as made only
        once the simulated delay is over (see poll), so a cancel before then stops it."""
        job_file = self.root / remote_id / "job.json"
        try:
            job = json.loads(job_file.read_text())
        except (FileNotFoundError, ValueError):
            raise ProviderError("The simulator has no record of this job.", permanent=True)
        if time.time() - job["created"] >= settings.SIMULATOR_DELAY_SECONDS:
            raise ProviderError("The simulator has already made this clip.", permanent=True)
        job["cancelled"] = True
        job_file.write_text(json.dumps(job))
        (self.root / remote_id / "video.mp4").unlink(missing_ok=True)  # nothing to deliver

    def forget(self, remote_id: str) -> None:
        """The job's folder (its copy of the first frame, the prompt, the video) goes with
        the clip. Only a folder directly under the scratch root, named like a job id."""
        if not re.fullmatch(r"[0-9a-f]{32}", remote_id or ""):
            return
        shutil.rmtree(self.root / remote_id, ignore_errors=True)

    def download(self, url: str, destination: Path) -> None:
        if not url.startswith("simulator://"):
            raise ProviderError("Not a simulator address.", permanent=True)
        relative = url.removeprefix("simulator://")
        source = (self.root / relative).resolve()
        if self.root.resolve() not in source.parents or not source.exists():
            raise ProviderError("The simulator has no such file.", permanent=True)
        shutil.copyfile(source, destination)


def _palette(prompt: str) -> list[tuple[int, int, int]]:
    digest = hashlib.sha256(prompt.encode()).digest()
    return [tuple(40 + digest[i + j] % 180 for j in range(3)) for i in range(0, 15, 3)]


def _caption_layer(prompt: str, size: tuple[int, int]) -> Image.Image:
    """The prompt as a caption in a dark band at the bottom, drawn once per clip."""
    width, height = size
    font_size = max(14, height // 24)
    font = ImageFont.load_default(size=font_size)
    chars = max(12, int(width / (font_size * 0.55)))
    lines = textwrap.wrap(prompt, chars)[:3]
    if len(textwrap.wrap(prompt, chars)) > 3:
        lines[-1] = lines[-1][: max(0, chars - 1)] + "…"
    line_height = int(font_size * 1.3)
    band = line_height * len(lines) + font_size
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    draw.rectangle((0, height - band, width, height), fill=(0, 0, 0, 140))
    y = height - band + font_size // 2
    for line in lines:
        draw.text((font_size // 2, y), line, font=font, fill=(255, 255, 255, 255))
        y += line_height
    small = ImageFont.load_default(size=max(10, font_size * 2 // 3))
    draw.text((8, 6), "OFFLINE PREVIEW", font=small, fill=(255, 255, 255, 190))
    return layer


def _procedural_frame(size, palette, t: float) -> Image.Image:
    """A moving picture with no input: a drifting gradient and orbiting shapes."""
    width, height = size
    top, bottom = palette[0], palette[1]
    shift = 0.5 + 0.5 * math.sin(t * 0.8)
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    for y in range(0, height, 4):
        k = (y / height + shift * 0.3) % 1.0
        color = tuple(int(top[c] * (1 - k) + bottom[c] * k) for c in range(3))
        draw.rectangle((0, y, width, y + 4), fill=color)
    for n, color in enumerate(palette[2:]):
        angle = t * (0.6 + 0.25 * n) + n * 2.1
        cx = width / 2 + math.cos(angle) * width * (0.18 + 0.08 * n)
        cy = height / 2 + math.sin(angle * 1.3) * height * 0.22
        r = height * (0.08 + 0.03 * n)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color)
    return image


def _moving_from(start: Image.Image, t: float, duration: float) -> Image.Image:
    """A slow push-in from the first frame: at t=0 the picture is exactly `start`."""
    width, height = start.size
    zoom = 1 + 0.15 * (t / duration)
    crop_w, crop_h = width / zoom, height / zoom
    left = (width - crop_w) / 2 + (width - crop_w) * 0.2 * math.sin(t / duration * math.pi)
    top = (height - crop_h) / 2
    box = (left, top, left + crop_w, top + crop_h)
    return start.resize(start.size, Image.Resampling.BILINEAR, box=box)


def render(
    path: Path,
    prompt: str,
    aspect_ratio: str,
    duration: int,
    first_frame: Path | None,
    *,
    audio: bool = False,
    extend_source: Path | None = None,
    end_frame: Path | None = None,
) -> None:
    """Encode an H.264 MP4 of `duration` seconds at `aspect_ratio`, the prompt as caption.

    With a first frame, frame 0 is that picture, uncaptioned, so a clip continued from
    another's last frame starts exactly where the other ended. The caption fades out
    before the end, so the last frame (the next clip's first) carries no old caption.

    `audio`: an AAC 48 kHz stereo soundtrack exactly as long as the picture, a tone whose
    pitch and balance follow the motion. `extend_source`: the result starts with that
    clip's frames (and sound), then `duration` seconds continuing from its last frame, as
    Veo's extend does. `end_frame`: the picture eases into that image, its last frame."""
    size = frame_size(aspect_ratio)
    start = _picture(first_frame, size) if first_frame is not None else None
    finish = _picture(end_frame, size) if end_frame is not None else None
    caption = _caption_layer(prompt, size)
    palette = _palette(prompt)
    total = int(duration * FPS)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "20"}
        sound = _SoundWriter(container) if audio else None

        def put(picture: Image.Image, samples=None) -> None:
            for packet in stream.encode(av.VideoFrame.from_image(picture)):
                container.mux(packet)
            if sound is not None:
                sound.write(samples)

        if extend_source is not None:
            repeated = 0
            source_sound = media.sound_samples(extend_source) if audio else None
            for picture in _source_pictures(extend_source, size):
                put(picture, _frame_samples(source_sound, repeated))
                start, repeated = picture, repeated + 1
        tone = _tone(total, duration, follows_image=start is not None) if audio else None
        for index in range(total):
            t = index / FPS
            if start is not None:
                picture = _moving_from(start, t, duration)
            else:
                picture = _procedural_frame(size, palette, t)
            if finish is not None:
                picture = _towards(picture, finish, index, total)
            strength = _caption_strength(index, total, fade_in=start is not None)
            if strength > 0:
                layer = caption if strength >= 1 else _faded(caption, strength)
                picture = Image.alpha_composite(picture.convert("RGBA"), layer).convert("RGB")
            put(picture, _frame_samples(tone, index))
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            sound.close()


def _picture(path: Path, size: tuple[int, int]) -> Image.Image:
    with Image.open(path) as image:
        return media.fit_cover(image, size)


def _source_pictures(path: Path, size: tuple[int, int]):
    """The frames of `path` at FPS (the nearest earlier frame when its rate differs), fitted
    to `size`."""
    rate = float(media.probe(path).fps or FPS)
    wanted = round(media.frame_count(path) * FPS / rate)
    emitted = 0
    with av.open(str(path)) as container:
        for number, frame in enumerate(container.decode(container.streams.video[0])):
            picture = None
            while emitted < wanted and int(emitted * rate / FPS + 1e-9) <= number:
                picture = picture or media.fit_cover(frame.to_image(), size)
                yield picture
                emitted += 1


SAMPLES_PER_FRAME = media.AUDIO_RATE // FPS


def _frame_samples(samples, index: int):
    """The sound of frame `index` (silence where `samples` has none)."""
    piece = np.zeros((2, SAMPLES_PER_FRAME), dtype=np.float32)
    if samples is not None:
        part = samples[:, index * SAMPLES_PER_FRAME : (index + 1) * SAMPLES_PER_FRAME]
        piece[:, : part.shape[1]] = part
    return piece


def _tone(frames: int, duration: float, follows_image: bool) -> np.ndarray:
    """A tone for `frames` frames, an octave above 220 Hz at most, rising as the picture
    moves: with a start image, its push-in and sideways drift (see _moving_from); without,
    the first shape's place on its orbit (see _procedural_frame). It pans with it too."""
    t = np.arange(frames * SAMPLES_PER_FRAME) / media.AUDIO_RATE
    if follows_image:
        motion = 0.5 * np.sin(t / duration * math.pi) + 0.5 * (t / duration)
    else:
        motion = 0.5 + 0.5 * np.cos(t * 0.6)
    phase = 2 * math.pi * np.cumsum(220 * 2**motion) / media.AUDIO_RATE
    wave = 0.2 * np.sin(phase) + 0.05 * np.sin(2 * phase)
    return np.stack([wave * (1 - 0.5 * motion), wave * (0.5 + 0.5 * motion)]).astype(np.float32)


class _SoundWriter:
    """AAC 48 kHz stereo in units of 1024 samples, fed a frame's worth at a time."""

    def __init__(self, container):
        self.container = container
        self.stream = container.add_stream("aac", rate=media.AUDIO_RATE, layout="stereo")
        self.pending = np.zeros((2, 0), dtype=np.float32)
        self.written = 0

    def write(self, samples: np.ndarray) -> None:
        self.pending = np.concatenate([self.pending, samples], axis=1)
        while self.pending.shape[1] >= 1024:
            self._encode(self.pending[:, :1024])
            self.pending = self.pending[:, 1024:]

    def close(self) -> None:
        if self.pending.shape[1]:
            self._encode(self.pending)  # a short last unit: the track ends with the picture
        for packet in self.stream.encode(None):
            self.container.mux(packet)

    def _encode(self, samples: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = media.AUDIO_RATE, self.written
        self.written += samples.shape[1]
        for packet in self.stream.encode(frame):
            self.container.mux(packet)


def _towards(picture: Image.Image, finish: Image.Image, index: int, total: int) -> Image.Image:
    """Ease `picture` into `finish` over the last second, reaching it on the last frame."""
    span = min(FPS, total - 1)
    into = index - (total - 1 - span)
    if span <= 0 or into >= span:
        return finish.copy()
    if into <= 0:
        return picture
    weight = into / span
    return Image.blend(picture, finish, weight * weight * (3 - 2 * weight))


def _caption_strength(index: int, total: int, fade_in: bool) -> float:
    """How visible the caption is on frame `index`: 0 on the last frame (and on the first
    when the clip starts from an image), fading over about half a second each way."""
    fade_frames = FPS // 2
    rising = min(1.0, index / fade_frames) if fade_in else 1.0
    falling = min(1.0, (total - 1 - index) / fade_frames)
    return max(0.0, min(rising, falling))


def _faded(layer: Image.Image, amount: float) -> Image.Image:
    alpha = layer.getchannel("A").point(lambda a: int(a * amount))
    faded = layer.copy()
    faded.putalpha(alpha)
    return faded
