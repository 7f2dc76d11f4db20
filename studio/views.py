"""Pages and the htmx fragments inside them. One view serves a page and its partial."""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.http import FileResponse, Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from .forms import FirstAccountForm, GenerateForm, data_from_clip, options_initial
from .models import Asset, Clip
from .providers import enabled_providers, find_model

GALLERY_PAGE = 24


def _gallery(user, before: int | None = None):
    clips = Clip.objects.visible_to(user).select_related("last_frame")
    if before:
        clips = clips.filter(pk__lt=before)
    page = list(clips.order_by("-pk")[: GALLERY_PAGE + 1])
    return page[:GALLERY_PAGE], len(page) > GALLERY_PAGE


def _generating_count(user) -> int:
    return Clip.objects.visible_to(user).unfinished().count()


def _studio_page(request, form, status=200):
    clips, has_more = _gallery(request.user)
    return render(
        request,
        "studio/home.html",
        {
            "form": form,
            "clips": clips,
            "has_more": has_more,
            "generating": _generating_count(request.user),
        },
        status=status,
    )


@login_required
@require_GET
def home(request):
    """The gallery with the generate form. With ?before=<id>, the next page of cards."""
    before = request.GET.get("before")
    if before and before.isdigit():
        clips, has_more = _gallery(request.user, int(before))
        return render(request, "studio/home.html#gallery_page", {"clips": clips, "has_more": has_more})
    initial = {}
    last_model = request.session.get("last_model")
    if last_model and find_model(last_model):
        initial["model"] = last_model
    return _studio_page(request, GenerateForm(user=request.user, initial=initial))


@login_required
@require_POST
def generate(request):
    form = GenerateForm(request.POST, request.FILES, user=request.user)
    valid = form.is_valid()
    # A good upload is kept even when something else is wrong, so it is not lost.
    kept = form.keep_upload()
    if not valid:
        if kept:
            # Show the kept files (by their ids) instead of empty file inputs.
            data = request.POST.copy()
            for name, values in kept.items():
                data.setlist(name, values)
            form = GenerateForm(data, user=request.user)
            form.is_valid()
        if request.htmx:
            return render(request, "studio/_generate_form.html", {"form": form}, status=422)
        return _studio_page(request, form, status=422)

    clip = Clip.create_for(request.user, form.spec, **form.clip_fields())
    request.session["last_model"] = form.spec.ref
    if request.htmx:
        fresh = GenerateForm(user=request.user, initial={"model": form.spec.ref,
                                                          "aspect_ratio": clip.aspect_ratio,
                                                          "duration": clip.duration})
        return render(request, "studio/_generated.html", {"form": fresh, "clip": clip,
                                                           "generating": _generating_count(request.user)})
    messages.success(request, "Your clip is queued. It will appear below when it is ready.")
    return redirect("home")


@login_required
@require_GET
def form_options(request):
    """The part of the form that depends on the model, re-rendered when the model or the
    duration changes; compatible values survive."""
    spec = find_model(request.GET.get("model", "")) or None
    form = GenerateForm(user=request.user, spec=spec,
                        initial=options_initial(spec, request.GET) if spec else {})
    return render(request, "studio/_generate_form.html#options", {"form": form})


@login_required
@require_GET
def continue_clip(request, pk):
    """The generate form set to continue a clip: its last frame as the first frame, the same
    model and aspect ratio, an empty prompt."""
    parent = get_object_or_404(Clip.objects.visible_to(request.user), pk=pk)
    if not parent.is_ready or parent.last_frame_id is None:
        messages.error(request, "That clip is not ready yet, so it has no last frame to continue from.")
        return redirect(parent)
    initial = {"model": parent.model_ref, "aspect_ratio": parent.aspect_ratio,
               "duration": parent.duration, "parent": parent.pk,
               "first_frame_asset": parent.last_frame_id, "start_mode": "first_frame"}
    spec = parent.spec
    if spec is None:
        messages.error(request, f"The model “{parent.model_label}” is not available any more; choose another.")
        initial.pop("model")
    form = GenerateForm(user=request.user, initial=initial)
    return _studio_page(request, form)


@login_required
@require_GET
def retry_clip(request, pk):
    """The generate form filled with a failed clip's settings, and the provider's objections
    (a 400's field messages) beside the fields they concern."""
    clip = get_object_or_404(Clip.objects.visible_to(request.user), pk=pk)
    if clip.spec is None:
        messages.error(request, f"The model “{clip.model_label}” is not available any more; choose another.")
        return redirect("home")
    form = GenerateForm(data_from_clip(clip), user=request.user)
    form.is_valid()
    for name, field_messages in (clip.field_errors or {}).items():
        target = name if name in form.fields else None
        for message in field_messages:
            form.add_error(target, message)
    return _studio_page(request, form)


@login_required
@require_GET
def clip_card(request, pk):
    clip = get_object_or_404(Clip.objects.visible_to(request.user), pk=pk)
    return render(request, "studio/_clip_card.html",
                  {"clip": clip, "generating": _generating_count(request.user)})


@login_required
@require_GET
def generating_count(request):
    return render(request, "studio/home.html#title", {"generating": _generating_count(request.user)})


@login_required
@require_GET
def clip_detail(request, pk):
    clip = get_object_or_404(Clip.objects.visible_to(request.user).select_related("last_frame"), pk=pk)
    context = {"clip": clip, "chain": clip.chain(), "takes": clip.children.order_by("pk")}
    if request.htmx and request.GET.get("part") == "player":
        return render(request, "studio/clip_detail.html#player", context)
    return render(request, "studio/clip_detail.html", context)


@login_required
@require_GET
def providers_page(request):
    providers = enabled_providers()
    enabled = {p.name for p in providers}
    return render(request, "studio/providers.html", {
        "providers": providers,
        "pictory_enabled": "pictory" in enabled,
        "public_base_url": settings.PUBLIC_BASE_URL,
    })


# --- Files ------------------------------------------------------------------------------

RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)$")


def serve_file(request, path: str, content_type: str | None = None, download_name: str | None = None):
    """Send a file from our storage, honouring one byte range (browsers seek videos with
    Range requests; without it some refuse to scrub)."""
    full = Path(settings.MEDIA_ROOT) / path
    if not full.is_file():
        raise Http404("No such file.")
    size = full.stat().st_size
    content_type = content_type or mimetypes.guess_type(full.name)[0] or "application/octet-stream"
    match = RANGE_RE.match(request.headers.get("Range", ""))
    if match and (match.group(1) or match.group(2)):
        start_s, end_s = match.groups()
        if start_s:
            start = int(start_s)
            end = min(int(end_s), size - 1) if end_s else size - 1
        else:
            start, end = max(0, size - int(end_s)), size - 1
        if start >= size or start > end:
            response = HttpResponse(status=416)
            response["Content-Range"] = f"bytes */{size}"
            return response
        handle = full.open("rb")
        handle.seek(start)
        length = end - start + 1

        def chunks(remaining=length):
            with handle:
                while remaining > 0:
                    data = handle.read(min(64 * 1024, remaining))
                    if not data:
                        break
                    remaining -= len(data)
                    yield data

        response = StreamingHttpResponse(chunks(), status=206, content_type=content_type)
        response["Content-Length"] = str(length)
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    else:
        response = FileResponse(full.open("rb"), content_type=content_type,
                                as_attachment=bool(download_name), filename=download_name or "")
    response["Accept-Ranges"] = "bytes"
    response["Cache-Control"] = "private, max-age=3600"
    return response


@login_required
@require_GET
def clip_video(request, pk):
    clip = get_object_or_404(Clip.objects.visible_to(request.user), pk=pk)
    if not clip.video:
        raise Http404("This clip has no video yet.")
    download = request.GET.get("download") == "1"
    name = f"lastframe-clip-{clip.pk}.mp4" if download else None
    return serve_file(request, clip.video.name, "video/mp4", download_name=name)


@login_required
@require_GET
def clip_thumbnail(request, pk):
    clip = get_object_or_404(Clip.objects.visible_to(request.user), pk=pk)
    if not clip.thumbnail:
        raise Http404("This clip has no thumbnail yet.")
    return serve_file(request, clip.thumbnail.name, "image/jpeg")


@login_required
@require_GET
def asset_file(request, pk):
    asset = get_object_or_404(Asset.objects.filter(owner=request.user), pk=pk)
    return serve_file(request, asset.file.name)


@require_GET
def published_file(request, token, name):
    """A file published for a provider to fetch: reachable only by its unguessable token."""
    asset = get_object_or_404(Asset, public_token=token)
    if Path(asset.file.name).name != name:
        raise Http404("No such file.")
    return serve_file(request, asset.file.name)


# --- Accounts ---------------------------------------------------------------------------


def _no_users() -> bool:
    return not get_user_model().objects.exists()


class StudioLoginView(LoginView):
    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def dispatch(self, request, *args, **kwargs):
        if _no_users():
            return redirect("setup")
        return super().dispatch(request, *args, **kwargs)


@require_http_methods(["GET", "POST"])
def setup(request):
    """"Create your account": only while the studio has no user; the first one is admin."""
    if not _no_users():
        return redirect("login")
    form = FirstAccountForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("home")
    return render(request, "registration/setup.html", {"form": form})


# --- Webhooks ---------------------------------------------------------------------------


def _webhook_hint(provider: str, token: str) -> HttpResponse:
    """What every provider's webhook does once the call is authenticated (for Pictory: by
    the token alone, as it signs nothing): make the clip due for polling. The body is never
    read; the job's state always comes from the provider's API. Answers fast, 204."""
    if Clip.wake_by_webhook(provider, token) is None:
        raise Http404("No such hook.")
    return HttpResponse(status=204)


@csrf_exempt
@require_POST
def pictory_webhook(request, token):
    return _webhook_hint("pictory", token)


def healthz(request):
    return HttpResponse("ok", content_type="text/plain")

