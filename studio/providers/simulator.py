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
import shutil
import textwrap
import time
import uuid
from decimal import Decimal
from pathlib import Path

import av
from django.conf import settings
from PIL import Image, ImageDraw, ImageFont

from .. import media
from .base import ModelSpec, Provider, ProviderError, RemoteStatus, Submission

FPS = 24
HEIGHT = 480  # small on purpose: encoding stays around a second per clip (NOTES.md)

FREE_NOTE = "Free: the offline simulator renders on this computer."

MODELS = [
    ModelSpec(
        provider="simulator",
        key="cinema",
        label="Sim Cinema · offline preview",
        aspect_ratios=("16:9", "9:16"),
        durations=(4, 6, 8),
        first_frame=True,
        cost_per_second=Decimal("0"),
        free_note=FREE_NOTE,
        description="Offline preview with the options of Veo 3.1: renders on this computer in seconds, free.",
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
    """Width and height for a ratio like "16:9", HEIGHT lines tall, both even (H.264)."""
    w, h = (int(part) for part in aspect_ratio.split(":"))
    width = int(round(HEIGHT * w / h / 2)) * 2
    return width, HEIGHT


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
            "created": time.time(),
            "first_frame": None,
        }
        if submission.first_frame is not None:
            # Like a hosted service fetching the image: take our own copy at submit time.
            target = job_dir / "first_frame.png"
            with Image.open(io.BytesIO(submission.first_frame.read_bytes())) as image:
                image.convert("RGB").save(target, "PNG")
            job["first_frame"] = target.name
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
        video = job_dir / "video.mp4"
        if not video.exists():
            partial = job_dir / f"video.{uuid.uuid4().hex}.part.mp4"
            first = job_dir / job["first_frame"] if job.get("first_frame") else None
            try:
                render(partial, job["prompt"], job["aspect_ratio"], job["duration"], first)
            except Exception as exc:  # the renderer's failure is the job's failure
                partial.unlink(missing_ok=True)
                return RemoteStatus(RemoteStatus.FAILED, error=f"Rendering failed: {exc}")
            partial.replace(video)  # atomic: a second poll never sees half a file
        return RemoteStatus(
            RemoteStatus.SUCCEEDED,
            video_url=f"simulator://{remote_id}/video.mp4",
            cost=Decimal("0"),
        )

    def cancel(self, remote_id: str) -> None:
        """Stop a job before it renders; one already rendered cannot be taken back."""
        job_file = self.root / remote_id / "job.json"
        try:
            job = json.loads(job_file.read_text())
        except (FileNotFoundError, ValueError):
            raise ProviderError("The simulator has no record of this job.", permanent=True)
        if (self.root / remote_id / "video.mp4").exists():
            raise ProviderError("The simulator has already made this clip.", permanent=True)
        job["cancelled"] = True
        job_file.write_text(json.dumps(job))

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


def render(path: Path, prompt: str, aspect_ratio: str, duration: int, first_frame: Path | None) -> None:
    """Encode an H.264 MP4 of `duration` seconds at `aspect_ratio`, the prompt as caption.

    With a first frame, frame 0 is that picture, uncaptioned, so a clip continued from
    another's last frame starts exactly where the other ended. The caption fades out
    before the end, so the last frame (the next clip's first) carries no old caption."""
    size = frame_size(aspect_ratio)
    start = None
    if first_frame is not None:
        with Image.open(first_frame) as image:
            start = media.fit_cover(image, size)
    caption = _caption_layer(prompt, size)
    palette = _palette(prompt)
    total = int(duration * FPS)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "20"}
        for index in range(total):
            t = index / FPS
            if start is not None:
                picture = _moving_from(start, t, duration)
            else:
                picture = _procedural_frame(size, palette, t)
            strength = _caption_strength(index, total, fade_in=start is not None)
            if strength > 0:
                layer = caption if strength >= 1 else _faded(caption, strength)
                picture = Image.alpha_composite(picture.convert("RGBA"), layer).convert("RGB")
            frame = av.VideoFrame.from_image(picture)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


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
