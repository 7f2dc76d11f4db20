"""Video and image work with PyAV and Pillow: probe, last frame, thumbnail, image checks.

No ffmpeg binary is called: PyAV's wheel carries what we need (NOTES.md).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import av
from django.conf import settings
from PIL import Image, ImageOps

THUMBNAIL_BOX = (640, 640)
IMAGE_FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP"}


class MediaError(Exception):
    """A file is not the media we expected; the message is fit to show a creator."""


@dataclass
class VideoInfo:
    duration: float
    width: int
    height: int
    codec: str
    frames: int


def probe(path: Path) -> VideoInfo:
    """Duration, size and codec of a video, or MediaError when it cannot be decoded."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError("The file has no video in it.")
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration:
                duration = container.duration / av.time_base
            else:
                duration = 0.0
            # Decoding one frame proves the stream is really readable, not just labelled.
            first = next(container.decode(stream), None)
            if first is None:
                raise MediaError("The video could not be decoded.")
            return VideoInfo(
                duration=round(duration, 3),
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                codec=stream.codec_context.name,
                frames=stream.frames or 0,
            )
    except MediaError:
        raise
    except (av.error.FFmpegError, StopIteration, ValueError) as exc:
        raise MediaError("The video could not be read; the file may be damaged.") from exc


def last_frame(path: Path) -> Image.Image:
    """The real last decoded frame of a video.

    Decoding a whole clip to reach its end is slow for long files, so we seek to a keyframe
    about a second before the end and decode from there (same pixels, measured: NOTES.md).
    If that finds nothing (odd timestamps), decode everything."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frame = None
            if stream.duration and stream.time_base:
                target = stream.duration - int(1 / stream.time_base)
                if target > 0:
                    container.seek(max(target, 0), stream=stream, backward=True)
                    for frame in container.decode(stream):
                        pass
            if frame is None:
                container.seek(0)
                for frame in container.decode(stream):
                    pass
            if frame is None:
                raise MediaError("The video has no frames.")
            return frame.to_image()
    except av.error.FFmpegError as exc:
        raise MediaError("The video could not be read; the file may be damaged.") from exc


def frame_at(path: Path, seconds: float) -> Image.Image:
    """The first frame at or after `seconds` (or the last one if the clip is shorter)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if seconds > 0 and stream.time_base:
            container.seek(int(seconds / stream.time_base), stream=stream, backward=True)
        frame = None
        for frame in container.decode(stream):
            if frame.time is not None and frame.time >= seconds:
                break
        if frame is None:
            raise MediaError("The video has no frames.")
        return frame.to_image()


def first_frame(path: Path) -> Image.Image:
    with av.open(str(path)) as container:
        frame = next(container.decode(container.streams.video[0]), None)
        if frame is None:
            raise MediaError("The video has no frames.")
        return frame.to_image()


def thumbnail_jpeg(image: Image.Image) -> bytes:
    """A JPEG that fits in THUMBNAIL_BOX, keeping the picture's shape."""
    thumb = image.convert("RGB")
    thumb.thumbnail(THUMBNAIL_BOX, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    thumb.save(out, "JPEG", quality=85, optimize=True)
    return out.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def fit_cover(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale and centre-crop `image` to exactly `size` (how a first frame fills the shot)."""
    return ImageOps.fit(image.convert("RGB"), size, Image.Resampling.LANCZOS)


@dataclass
class CheckedImage:
    content: bytes
    extension: str
    width: int
    height: int


def check_image(data: bytes) -> CheckedImage:
    """Decode an uploaded image fully and re-encode it without its metadata.

    Raises MediaError with a plain message for anything that is not a whole JPEG, PNG or
    WebP within the size limits. verify() alone misses truncated files and Django's
    ImageField accepts them (NOTES.md), so the pixels are really decoded here."""
    limit_mb = settings.STUDIO_MAX_IMAGE_BYTES / (1024 * 1024)
    if len(data) > settings.STUDIO_MAX_IMAGE_BYTES:
        raise MediaError(f"The image is larger than {limit_mb:g} MB.")
    max_pixels = settings.STUDIO_MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            # Pillow only warns between the limit and twice the limit: make it an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            previous = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = max_pixels
            try:
                probe_img = Image.open(io.BytesIO(data))
                if probe_img.format not in IMAGE_FORMATS:
                    raise MediaError("Please use a JPEG, PNG or WebP image.")
                if probe_img.width * probe_img.height > max_pixels:
                    raise MediaError(
                        f"The image has more than {max_pixels / 1e6:g} megapixels."
                    )
                probe_img.verify()
                image = Image.open(io.BytesIO(data))
                image.load()
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise MediaError(f"The image has more than {max_pixels / 1e6:g} megapixels.")
    except (OSError, SyntaxError, ValueError) as exc:
        raise MediaError("This file is not a complete JPEG, PNG or WebP image.") from exc

    fmt = image.format
    image = ImageOps.exif_transpose(image)  # keep the picture upright once EXIF is gone
    out = io.BytesIO()
    if fmt == "JPEG":
        image.convert("RGB").save(out, "JPEG", quality=95)
        extension = "jpg"
    else:
        has_alpha = image.mode in ("RGBA", "LA") or "transparency" in image.info
        image.convert("RGBA" if has_alpha else "RGB").save(out, "PNG")
        extension = "png"
    return CheckedImage(out.getvalue(), extension, image.width, image.height)


def load_image(path: Path) -> Image.Image:
    """Open an image a provider sent us, fully decoded, or raise MediaError."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise MediaError("The image could not be read.") from exc
