"""The one intake for what a creator brings: a file dropped or chosen, a pasted link, or
files posted with the form when JavaScript is off. Everything becomes an Asset owned by the
creator first; the generate form only ever receives asset ids.

Images are checked here (decoded in full, re-encoded without metadata). Videos are kept as
they came and checked and re-encoded by the worker (jobs.prepare_video): that can take many
seconds of CPU, which a web request must not spend. Their held card says "Preparing…" until
they are ready.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.db import transaction

from . import jobs, links, media
from .models import Asset, quota_problem

# The form's inputs: what kind of file each takes, the form field that names a held file,
# the file input a page without JavaScript posts, and the label.
INPUTS = {
    "first_frame": ("image", "first_frame_asset", "first_frame_upload", "First frame"),
    "last_frame": ("image", "last_frame_asset", "last_frame_upload", "Last frame"),
    "reference": ("image", "reference_assets", "reference_images", "Reference image"),
    "extend_video": ("video", "extend_video", "extend_video_upload", "Video to extend"),
}


class InputError(Exception):
    """A file or link that cannot be used; the message is fit to show beside the field."""


def size_limit(kind: str) -> int:
    return settings.STUDIO_MAX_IMAGE_BYTES if kind == Asset.Kind.IMAGE else settings.STUDIO_MAX_VIDEO_BYTES


def check_size(size: int, kind: str) -> None:
    """The one size check, before anything is read into memory or decoded."""
    limit = size_limit(kind)
    if size > limit:
        what = "image" if kind == Asset.Kind.IMAGE else "video"
        raise InputError(f"The {what} is larger than {limit / (1024 * 1024):g} MB.")


def held_value(field: str, asset: Asset) -> str:
    """What the form's field holds for this asset."""
    return f"asset:{asset.pk}" if field == "extend_video" else str(asset.pk)


def from_upload(owner, upload, kind: str) -> Asset:
    """An uploaded file (Django's UploadedFile) as an Asset, or InputError. The size is
    checked in from_path: an upload held in memory is small (FILE_UPLOAD_MAX_MEMORY_SIZE)."""
    if hasattr(upload, "temporary_file_path"):  # a large upload is on disk already
        return from_path(owner, Path(upload.temporary_file_path()), kind, upload.name)
    with tempfile.NamedTemporaryFile(prefix="upload-") as tmp:
        for chunk in upload.chunks():
            tmp.write(chunk)
        tmp.flush()
        return from_path(owner, Path(tmp.name), kind, upload.name)


def from_link(owner, url: str, kind: str) -> Asset:
    """Fetch a pasted link once (public addresses only, links.fetch_link) and keep our own
    copy of what it pointed to, or InputError."""
    try:
        fetched = links.fetch_link(url, (kind,), size_limit(kind))
    except links.LinkError as exc:
        raise InputError(exc.message)
    try:
        name = Path(fetched.final_url.split("?", 1)[0]).name or "link"
        return from_path(owner, fetched.path, kind, name)
    finally:
        fetched.path.unlink(missing_ok=True)


def from_path(owner, path: Path, kind: str, original_name: str = "") -> Asset:
    """A file on this machine (an upload's or a link's copy) as an Asset: an image checked
    and re-encoded now; a video stored as it is and prepared by the worker."""
    size = path.stat().st_size
    check_size(size, kind)
    full = quota_problem(owner, size)
    if full:
        raise InputError(full)
    if kind == Asset.Kind.IMAGE:
        try:
            checked = media.check_image(path)  # decoded once, at reduced size when large
        except media.MediaError as exc:
            raise InputError(str(exc))
        asset = Asset(
            owner=owner,
            kind=Asset.Kind.IMAGE,
            original_name=original_name[:255],
            width=checked.width,
            height=checked.height,
        )
        asset.file.save(f"image.{checked.extension}", ContentFile(checked.content), save=False)
        asset.save()
        return asset
    asset = Asset(
        owner=owner, kind=Asset.Kind.VIDEO, status=Asset.Status.PREPARING, original_name=original_name[:255]
    )
    suffix = Path(original_name).suffix.lower()
    with path.open("rb") as fh:
        asset.file.save(
            f"original{suffix if suffix in ('.mp4', '.mov', '.webm') else ''}", File(fh), save=False
        )
    asset.save()
    transaction.on_commit(lambda: jobs.enqueue_prepare(asset.pk))
    return asset


def bring(owner, field: str, upload=None, link: str = "") -> Asset:
    """A dropped or chosen file, or a pasted link, for one of the form's inputs."""
    kind = INPUTS[field][0]
    if upload is not None:
        return from_upload(owner, upload, kind)
    if link:
        return from_link(owner, link, kind)
    raise InputError("Drop a file, choose one, or paste a link.")


def take_form_files(owner, data, files) -> tuple:
    """Files posted with the generate form (a page without JavaScript) become Assets first,
    and the form data names them by id, as the drop zones do. Returns (data, errors): a
    copy of `data` with the ids added, and the messages of files that were refused, by the
    form field they belong to. A good file is kept even when another fails, so nothing the
    creator chose is lost."""
    data = data.copy()
    errors: dict[str, list[str]] = {}
    for field, (kind, held_field, upload_field, _label) in INPUTS.items():
        for upload in files.getlist(upload_field) if files else []:
            if not upload or not upload.name:
                continue
            try:
                asset = from_upload(owner, upload, kind)
            except InputError as exc:
                prefix = f"{upload.name}: " if field == "reference" else ""
                errors.setdefault(held_field, []).append(f"{prefix}{exc}")
                continue
            if field == "reference":
                data.appendlist(held_field, held_value(field, asset))
            elif field == "extend_video" and data.get(held_field):
                # A clip was chosen as well: say so rather than pick one. The upload stays
                # among the creator's videos, offered in the same list.
                errors.setdefault(held_field, []).append(
                    "Choose one of your clips or upload a video, not both."
                )
            else:
                data[held_field] = held_value(field, asset)
    return data, errors
