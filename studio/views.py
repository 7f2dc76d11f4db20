"""Pages and the htmx fragments inside them. One view serves a page and its partial."""

from __future__ import annotations

import inspect
import mimetypes
import re
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.db.models import Q
from django.http import FileResponse, Http404, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header, url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import catalogue, inputs, jobs, keys, media
from .forms import (
    FirstAccountForm,
    GenerateForm,
    ProviderKeyForm,
    data_from_clip,
    form_field_of,
    initial_from_clip,
    options_initial,
)
from .models import Asset, ChainExport, Clip
from .providers import ProviderError, WebhookRefused, all_providers, enabled_providers, get_provider

GALLERY_PAGE = 24


def _clip_for(request, pk: int, queryset=None) -> Clip:
    """This creator's clip, or 404 (another creator's clip is not theirs to know of)."""
    return get_object_or_404((queryset or Clip.objects).visible_to(request.user), pk=pk)


def _model_gone(request, clip: Clip):
    """A redirect with a message when the clip's model is no longer offered, else None."""
    if catalogue.find_model(clip.model_ref) is not None:
        return None
    messages.error(request, f"The model “{clip.model_label}” is not available any more; choose another.")
    return redirect("home")


# The gallery's status filter: a creator's words, not the job's internal states.
STATUS_FILTERS = {
    "generating": ("Generating", ~Q(status__in=Clip.FINAL_STATES)),
    "ready": ("Ready", Q(status=Clip.Status.READY)),
    "failed": ("Failed", Q(status=Clip.Status.FAILED)),
    "cancelled": ("Cancelled", Q(status=Clip.Status.CANCELLED)),
}

# The session key of the form a Generate without JavaScript sent, for the page it lands on.
KEPT_FORM = "kept_form"


def _gallery_filters(params) -> dict:
    """The filters in a query string (status, model, q), only those that are valid."""
    found = {}
    if params.get("status") in STATUS_FILTERS:
        found["status"] = params["status"]
    provider, _, key = (params.get("model") or "").partition(":")
    if provider and key:
        found["model"] = f"{provider}:{key}"
    q = (params.get("q") or "").strip()[:200]
    if q:
        found["q"] = q
    return found


def _gallery(user, before: int | None = None, filters: dict | None = None):
    """One page of cards, newest first: GALLERY_PAGE + 1 rows read to know whether more
    follow. Keyset paging on pk (`before`), so page 400 costs what page 1 costs."""
    clips = Clip.objects.visible_to(user).select_related("last_frame")
    filters = filters or {}
    if "status" in filters:
        clips = clips.filter(STATUS_FILTERS[filters["status"]][1])
    if "model" in filters:
        provider, _, key = filters["model"].partition(":")
        clips = clips.filter(provider=provider, model_key=key)
    if "q" in filters:
        clips = clips.filter(prompt__icontains=filters["q"])
    if before:
        clips = clips.filter(pk__lt=before)
    page = list(clips.order_by("-pk")[: GALLERY_PAGE + 1])
    return page[:GALLERY_PAGE], len(page) > GALLERY_PAGE


def _model_filter_choices(user) -> list[tuple[str, str]]:
    """The models the creator has clips of, for the gallery's model filter."""
    rows = (
        Clip.objects.visible_to(user)
        .order_by()
        .values_list("provider", "model_key", "model_label")
        .distinct()
    )
    choices = {}
    for provider, key, label in rows:
        choices.setdefault(f"{provider}:{key}", label)
    return sorted(choices.items(), key=lambda item: item[1].lower())


def _gallery_context(request, before: int | None = None) -> dict:
    filters = _gallery_filters(request.GET)
    clips, has_more = _gallery(request.user, before, filters)
    return {"clips": clips, "has_more": has_more, "filters": filters, "filter_query": urlencode(filters)}


def _generating_count(user) -> int:
    return Clip.objects.visible_to(user).unfinished().count()


def _studio_page(request, form, status=200):
    return render(
        request,
        "studio/home.html",
        {
            "form": form,
            **_gallery_context(request),
            "status_filters": [(value, label) for value, (label, _) in STATUS_FILTERS.items()],
            "model_filters": _model_filter_choices(request.user),
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
        return render(request, "studio/home.html#gallery_page", _gallery_context(request, int(before)))
    if request.htmx and request.htmx.target == "gallery" and not request.htmx.history_restore_request:
        # The filters changed: the first page of cards that match.
        return render(request, "studio/home.html#gallery_page", _gallery_context(request))
    initial = {}
    last_model = request.session.get("last_model")
    if last_model and catalogue.find_model(last_model):
        initial["model"] = last_model
    # After a Generate without JavaScript: the form as it was sent, prompt included.
    kept = request.session.pop(KEPT_FORM, None)
    if isinstance(kept, dict) and catalogue.find_model(kept.get("model", "")):
        initial.update(kept)
    return _studio_page(request, GenerateForm(user=request.user, initial=initial))


@login_required
@require_POST
def generate(request):
    # Files posted with the form (no JavaScript) become held inputs first, so a good file
    # is kept, and shown by its id, even when something else is wrong.
    data, intake_errors = inputs.take_form_files(request.user, request.POST, request.FILES)
    form = GenerateForm(data, user=request.user, intake_errors=intake_errors)
    if not form.is_valid():
        if request.htmx:
            return render(request, "studio/_generate_form.html", {"form": form}, status=422)
        return _studio_page(request, form, status=422)

    clip = jobs.start_clip(request.user, form.spec, **form.clip_fields())
    request.session["last_model"] = form.spec.ref
    # The form stays as it was sent, prompt included: creators iterate on a prompt, and
    # "Clear" empties it.
    kept = options_initial(form.spec, data)
    if request.htmx:
        return render(
            request,
            "studio/_generated.html",
            {
                "form": GenerateForm(user=request.user, initial=kept),
                "clip": clip,
                "generated": clip,
                "generating": _generating_count(request.user),
            },
        )
    request.session[KEPT_FORM] = kept
    messages.success(request, f"Clip #{clip.pk} queued. Its card is below, and plays there once it is ready.")
    return redirect(reverse("home") + f"#clip-{clip.pk}")


@login_required
@require_GET
def form_options(request):
    """The part of the form that depends on the model, re-rendered when the model or the
    duration changes; compatible values survive."""
    spec = catalogue.find_model(request.GET.get("model", "")) or None
    changes: list[str] = []
    form = GenerateForm(
        user=request.user, spec=spec, initial=options_initial(spec, request.GET, changes) if spec else {}
    )
    form.carry_notes = changes
    return render(request, "studio/_generate_form.html#options", {"form": form})


@login_required
@require_GET
def continue_clip(request, pk):
    """The generate form set to continue a clip: its last frame as the first frame, the same
    model and aspect ratio, an empty prompt."""
    parent = _clip_for(request, pk)
    if not parent.is_ready or parent.last_frame_id is None:
        messages.error(request, "That clip is not ready yet, so it has no last frame to continue from.")
        return redirect(parent)
    initial = {
        "model": parent.model_ref,
        "aspect_ratio": parent.aspect_ratio,
        "duration": parent.duration,
        "parent": parent.pk,
        "first_frame_asset": parent.last_frame_id,
        "start_mode": "first_frame",
    }
    if catalogue.find_model(parent.model_ref) is None:
        messages.error(
            request, f"The model “{parent.model_label}” is not available any more; choose another."
        )
        initial.pop("model")
    form = GenerateForm(user=request.user, initial=initial)
    return _studio_page(request, form)


@login_required
@require_http_methods(["GET", "POST"])
def retry_clip(request, pk):
    """POST: send a failed clip again with the same settings, as the same clip (its card
    goes back to queued). GET, or a clip the provider objected to field by field (the same
    settings would fail again): the generate form filled with the clip's settings and the
    provider's objections (a 400's field messages) beside the fields they concern."""
    clip = _clip_for(request, pk)
    gone = _model_gone(request, clip)
    if gone:
        return gone
    if request.method == "POST" and not clip.field_errors:
        jobs.retry_clip(clip)
        if request.htmx:
            return render(
                request,
                "studio/_clip_card.html",
                {"clip": clip, "generating": _generating_count(request.user)},
            )
        return redirect(_next_url(request) or "home")
    if request.method == "POST":
        return redirect("retry_clip", clip.pk)
    form = GenerateForm(data_from_clip(clip), user=request.user)
    form.is_valid()
    for name, field_messages in (clip.field_errors or {}).items():
        target = form_field_of(name)
        target = target if target in form.fields else None
        for message in field_messages:
            form.add_error(target, message)
    return _studio_page(request, form)


@login_required
@require_POST
def cancel_clip(request, pk):
    """ "Cancel": free for a clip not sent yet; for one a provider has, only where the
    provider can stop it (the card says beforehand which it is)."""
    clip = _clip_for(request, pk)
    cancelled, message = jobs.cancel_clip(clip)
    clip.refresh_from_db()
    if request.htmx:
        return render(
            request,
            "studio/_clip_card.html",
            {"clip": clip, "note": message, "generating": _generating_count(request.user)},
        )
    (messages.success if cancelled else messages.info)(request, message)
    return redirect(reverse("home") + f"#clip-{clip.pk}")


@login_required
@require_GET
def clip_card(request, pk):
    clip = _clip_for(request, pk)
    return render(
        request, "studio/_clip_card.html", {"clip": clip, "generating": _generating_count(request.user)}
    )


@login_required
@require_GET
def clip_detail(request, pk):
    clip = _clip_for(request, pk, Clip.objects.select_related("last_frame"))
    context = {"clip": clip, "chain": clip.chain(), "takes": clip.children.order_by("pk")}
    return render(request, "studio/clip_detail.html", context)


def _key_state(request, provider) -> dict | None:
    """Where a provider's key stands, for the Providers page: where it comes from and, for
    an admin only, its last four characters (never more of it)."""
    if not provider.key_setting:
        return None
    state = {"source": provider.key_source, "setting": provider.key_setting}
    if request.user.is_superuser:
        saved, saved_state = keys.stored(provider.name), keys.saved_state(provider.name)
        state.update(
            ending=keys.last_four(provider.api_key),
            saved_ending=keys.last_four(saved),
            has_saved=saved_state != "none",
            unreadable=saved_state == "unreadable",
        )
    return state


def _providers_context(request, key_forms: dict | None = None) -> dict:
    rows = []
    for provider in all_providers():
        enabled = provider.is_enabled()
        rows.append(
            {
                "provider": provider,
                "enabled": enabled,
                "models": catalogue.models_of(provider) if enabled else [],
                "note": catalogue.note(provider) if enabled else "",
                "key": _key_state(request, provider),
                "key_form": (key_forms or {}).get(provider.name) or ProviderKeyForm.for_provider(provider),
            }
        )
    return {
        "rows": rows,
        "any_enabled": any(row["enabled"] for row in rows),
        "public_base_url": settings.PUBLIC_BASE_URL,
        "is_admin": request.user.is_superuser,
    }


@login_required
@require_GET
def providers_page(request):
    """Every provider the studio knows: the models of those that are on, and how to connect
    the others (an admin can paste a key here)."""
    return render(request, "studio/providers.html", _providers_context(request))


@login_required
@require_POST
def provider_key(request, name):
    """An admin's key for a provider: "Test" (one cheap call that spends nothing; nothing
    is saved), "Save" (tested first; a refused key is kept only with "Save anyway"), or
    "Remove". The key never comes back in a page: answers carry messages only."""
    if not request.user.is_superuser:
        raise PermissionDenied("Only an admin can change provider keys.")
    provider = next((p for p in all_providers() if p.name == name and p.key_setting), None)
    if provider is None:
        raise Http404("No such provider.")
    action = request.POST.get("action", "")
    if action == "remove":
        return _remove_key(request, provider)
    form = ProviderKeyForm.for_provider(provider, request.POST)
    feedback = {"provider": provider, "form": form}
    if not form.is_valid():
        return _key_feedback(request, feedback, status=422)
    key = form.cleaned_data["key"]
    if action in ("test", "save"):
        feedback["check"] = check = provider.test_key(key)
        if action == "test" or not check.accepted:
            feedback["offer_save_anyway"] = not check.accepted
            return _key_feedback(request, feedback)
    elif action != "save_anyway":
        return HttpResponse("Unknown action.", status=400, content_type="text/plain")
    keys.save(provider.name, key, request.user)
    message = f"{provider.label} key saved (ending {keys.last_four(key) or '…'})."
    if provider.key_source == "environment":
        message += f" {provider.key_setting} is set in the environment, and wins while it is."
    else:
        message += " Its models are in the Model list now."
    messages.success(request, message)
    return _back_to_providers(request, provider)


def _remove_key(request, provider):
    unfinished = Clip.objects.unfinished().filter(provider=provider.name).count()
    if unfinished and request.POST.get("confirm") != "1":
        return _key_feedback(
            request,
            {"provider": provider, "form": ProviderKeyForm.for_provider(provider), "unfinished": unfinished},
        )
    keys.remove(provider.name)
    if provider.key_source == "environment":
        after = f"{provider.key_setting} in the environment is still used."
    else:
        after = "Its models are no longer offered until a key is added again; clips made with it keep their videos."
    messages.success(request, f"{provider.label} key removed. {after}")
    return _back_to_providers(request, provider)


def _key_feedback(request, context: dict, status: int = 200):
    if request.htmx:
        return render(request, "studio/providers.html#key_feedback", context, status=status)
    forms_by_name = {context["provider"].name: context["form"]}
    page = _providers_context(request, forms_by_name)
    for row in page["rows"]:
        if row["provider"].name == context["provider"].name:
            row["feedback"] = context
    return render(request, "studio/providers.html", page, status=status)


def _back_to_providers(request, provider):
    """The Providers page again, at this provider's section, with the message, its new
    state and its models. The query makes it a new page for the browser: a redirect to the
    page already shown that only adds a #fragment would just scroll."""
    target = reverse("providers") + f"?changed={provider.name}#provider-{provider.name}"
    if request.htmx:
        response = HttpResponse(status=204)
        response["HX-Redirect"] = target
        return response
    return redirect(target)


@login_required
@require_POST
def refresh_models(request):
    """ "Refresh models": read again the model lists of providers that publish one."""
    for provider in enabled_providers():
        if not provider.publishes_models:
            continue
        try:
            count = catalogue.refresh(provider)
        except ProviderError as exc:
            messages.error(request, f"Could not read {provider.label}'s model list: {exc.message}")
        else:
            messages.success(
                request, f"{provider.label} lists {count} video model{'s' if count != 1 else ''}."
            )
    return redirect("providers")


# --- Chains, takes, remix, delete -------------------------------------------------------


def _next_url(request) -> str:
    """A same-site page to go back to after a POST (the `next` field), or ""."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return ""


def chain_totals(clips) -> dict:
    """Total duration and cost of a sequence; costs per unit (credits and USD never added
    together). Made clips count what they cost, unfinished ones their estimate."""
    seconds = sum((c.video_duration or c.duration or 0) for c in clips)
    by_unit, estimated, unknown = {}, False, 0
    for clip in clips:
        amount = clip.cost_actual if clip.cost_actual is not None else clip.cost_estimate
        if amount is None:
            unknown += 1
            continue
        estimated = estimated or clip.cost_actual is None
        by_unit[clip.cost_unit] = by_unit.get(clip.cost_unit, 0) + amount
    costs = [
        f"{amount.normalize():f} {unit}".strip() for unit, amount in sorted(by_unit.items()) if amount or unit
    ]
    if not costs and not unknown:
        costs = ["Free"]
    return {
        "seconds": seconds,
        "costs": costs,
        "estimated": estimated and costs != ["Free"],
        "unknown": unknown,
    }


def _export_blocker(clips) -> str:
    """Why the sequence cannot be joined yet ("" when it can)."""
    for clip in clips:
        if clip.status == Clip.Status.FAILED:
            return f"Clip #{clip.pk} failed: try it again or choose another take before joining the chain."
        if clip.status == Clip.Status.CANCELLED:
            return f"Clip #{clip.pk} was cancelled: generate it again or choose another take before joining the chain."
        if not clip.is_ready:
            return f"Clip #{clip.pk} is still generating: the chain can be joined once it is ready."
    return ""


def _export_context(request, clip, clips, export=None) -> dict:
    if export is None:
        export = ChainExport.latest_for(request.user, clips)
    return {"clip": clip, "export": export, "blocker": _export_blocker(clips)}


@login_required
@require_GET
def chain_view(request, pk):
    """The chain view: the sequence from the root through this clip and on through the
    chosen takes, each step with its takes side by side, the totals, and the join."""
    clip = _clip_for(request, pk)
    steps = clip.chain_steps()
    clips = [step for step, _ in steps]
    return render(
        request,
        "studio/chain.html",
        {
            "clip": clip,
            "steps": steps,
            "clips": clips,
            "totals": chain_totals(clips),
            "last": clips[-1],
            **_export_context(request, clip, clips),
        },
    )


@login_required
@require_POST
def choose_take(request, pk):
    """Use this take at its step: the sequence (and every chain view above it) goes on
    through it."""
    take = _clip_for(request, pk)
    if take.parent_id is None:
        raise Http404("This clip is not a take of another clip.")
    take.use_as_take()
    return redirect("chain_view", take.pk)


@login_required
@require_POST
def start_chain_export(request, pk):
    """ "Download the whole chain": join the sequence shown in the chain view of `pk`."""
    clip = _clip_for(request, pk)
    clips = clip.sequence()
    blocker = _export_blocker(clips)
    export = None if blocker else jobs.start_export(request.user, clips)
    if request.htmx:
        return render(
            request,
            "studio/_chain_export.html",
            _export_context(request, clip, clips, export),
            status=409 if blocker else 200,
        )
    if blocker:
        messages.error(request, blocker)
    return redirect("chain_view", clip.pk)


@login_required
@require_GET
def chain_export(request, pk):
    """The join's progress (an htmx fragment that polls itself until it is done)."""
    export = get_object_or_404(ChainExport.objects.filter(owner=request.user), pk=pk)
    clip = export.clip
    return render(request, "studio/_chain_export.html", {"clip": clip, "export": export, "blocker": ""})


@login_required
@require_GET
def chain_export_file(request, pk):
    export = get_object_or_404(
        ChainExport.objects.filter(owner=request.user, status=ChainExport.Status.READY), pk=pk
    )
    if not export.file:
        raise Http404("This join has no file.")
    return serve_file(request, export.file.name, "video/mp4", download_name=export.download_name)


@login_required
@require_GET
def remix_clip(request, pk):
    """The generate form filled with a clip's settings and prompt, to change and send."""
    clip = _clip_for(request, pk)
    gone = _model_gone(request, clip)
    if gone:
        return gone
    messages.info(request, f"Remixing clip #{clip.pk}: change what you like, then press Generate.")
    return _studio_page(request, GenerateForm(user=request.user, initial=initial_from_clip(clip)))


@login_required
@require_POST
def generate_again(request, pk):
    """ "Generate again": a new clip with the same settings and the same parent, so a clip
    that continues another becomes a new take of that step."""
    clip = _clip_for(request, pk)
    gone = _model_gone(request, clip)
    if gone:
        return gone
    form = GenerateForm(data_from_clip(clip), user=request.user)
    if not form.is_valid():
        return _studio_page(request, form, status=422)
    again = jobs.start_clip(request.user, form.spec, **form.clip_fields())
    messages.success(request, f"Generating clip #{again.pk}, a new take of clip #{clip.pk}.")
    return redirect(_next_url(request) or reverse("chain_view", args=[again.pk]))


@login_required
@require_http_methods(["GET", "POST"])
def delete_clip(request, pk):
    """Delete a clip and its files after a confirmation. A clip that others continue asks
    whether its takes go too; if not, they become the first clips of their own chains."""
    clip = _clip_for(request, pk)
    if request.method == "POST":
        with_takes = request.POST.get("takes") == "delete"
        count = jobs.delete_clip(clip, with_takes=with_takes)
        others = count - 1
        messages.success(
            request,
            f"Clip #{pk} deleted"
            + (f", with {others} clip{'s' if others != 1 else ''} that continued it." if others else "."),
        )
        return redirect("home")
    descendants = clip.descendants()
    return render(
        request,
        "studio/delete_clip.html",
        {
            "clip": clip,
            "takes": [c for c in descendants if c.parent_id == clip.pk],
            "descendants": descendants,
        },
    )


# --- Files ------------------------------------------------------------------------------

RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)$")


def _storage_redirect(storage, name: str, content_type: str | None, download_name: str | None):
    """A file in a storage without local paths (a bucket): send the browser (or the provider)
    to the storage's own address for it. For S3 that is a presigned URL that stops working
    after AWS_QUERYSTRING_EXPIRE seconds, so the bucket stays private; the caller has already
    checked who may see the file."""
    if "parameters" in inspect.signature(storage.url).parameters:  # S3Storage: headers S3 sends back
        parameters = {
            "ResponseContentType": content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        }
        if download_name:
            parameters["ResponseContentDisposition"] = content_disposition_header(True, download_name)
        url = storage.url(name, parameters=parameters)
    else:
        url = storage.url(name)
    response = HttpResponseRedirect(url)
    # The address expires: never let a cache keep the redirect longer than the URL lives.
    response["Cache-Control"] = "private, no-store"
    return response


def serve_file(
    request, path: str, content_type: str | None = None, download_name: str | None = None, storage=None
):
    """Send a stored file (`path`: its name in the storage), honouring one byte range
    (browsers seek videos with Range requests; without it some refuse to scrub). A storage
    without local paths (S3) answers with a redirect to the storage's short-lived URL."""
    storage = storage if storage is not None else default_storage
    full = media.local_path(storage, path)
    if full is None:
        return _storage_redirect(storage, path, content_type, download_name)
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
        response = FileResponse(
            full.open("rb"),
            content_type=content_type,
            as_attachment=bool(download_name),
            filename=download_name or "",
        )
    response["Accept-Ranges"] = "bytes"
    response["Cache-Control"] = "private, max-age=3600"
    return response


@login_required
@require_GET
def clip_video(request, pk):
    clip = _clip_for(request, pk)
    if not clip.video:
        raise Http404("This clip has no video yet.")
    download = request.GET.get("download") == "1"
    name = f"lastframe-clip-{clip.pk}.mp4" if download else None
    return serve_file(request, clip.video.name, "video/mp4", download_name=name)


@login_required
@require_GET
def clip_thumbnail(request, pk):
    clip = _clip_for(request, pk)
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
    """ "Create your account": only while the studio has no user; the first one is admin."""
    if not _no_users():
        return redirect("login")
    form = FirstAccountForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("home")
    return render(request, "registration/setup.html", {"form": form})


# --- Webhooks ---------------------------------------------------------------------------


@csrf_exempt
@require_POST
def provider_webhook(request, provider, token):
    """A provider's call that a job moved on. Its own check first (a signature, for those
    that sign; a refused call changes nothing); then it is only a hint: the clip with this
    unguessable token is made due for polling, once per delivery when the provider names its
    deliveries. The body is never trusted; the job's state always comes from the provider's
    API. Answers fast, 204."""
    try:
        receiver = get_provider(provider)
    except LookupError:
        raise Http404("No such hook.")
    try:
        delivery_key = receiver.check_webhook(request)
    except WebhookRefused as refused:
        return HttpResponse(refused.reason, status=refused.status, content_type="text/plain")
    if jobs.wake_by_webhook(receiver.name, token, delivery_key) is None:
        raise Http404("No such hook.")
    return HttpResponse(status=204)


@require_GET
def healthz(request):
    return HttpResponse("ok", content_type="text/plain")


# --- Inputs a creator brings (drop, choose, or paste a link) ---------------------------------


def _held_context(asset: Asset, field: str) -> dict:
    _kind, input_name, _upload, label = inputs.INPUTS[field]
    return {
        "asset": asset,
        "field": field,
        "label": label,
        "input_name": input_name,
        "input_value": inputs.held_value(field, asset),
    }


@login_required
@require_POST
def add_input(request):
    """Take a dropped or chosen file, or a pasted link (studio.inputs), and answer with its
    held card: a preview holding the asset's id (or a plain message, 422). A video's card
    says "Preparing…" and polls until the worker has checked it."""
    field = request.POST.get("field", "")
    if field not in inputs.INPUTS:
        return HttpResponse("Unknown input.", status=400, content_type="text/plain")
    try:
        asset = inputs.bring(
            request.user, field, upload=request.FILES.get("file"), link=request.POST.get("link", "").strip()
        )
    except inputs.InputError as exc:
        return HttpResponse(str(exc), status=422, content_type="text/plain")
    return render(request, "studio/_held_asset.html", _held_context(asset, field))


@login_required
@require_GET
def held_input(request, pk):
    """A held input's card again (a video being prepared polls it until it is ready)."""
    asset = get_object_or_404(Asset.objects.filter(owner=request.user), pk=pk)
    field = request.GET.get("field", "")
    if field not in inputs.INPUTS or inputs.INPUTS[field][0] != asset.kind:
        raise Http404("No such input.")
    return render(request, "studio/_held_asset.html", _held_context(asset, field))


@login_required
@require_GET
def asset_poster(request, pk):
    """The first frame of a held video, as a small JPEG preview (only once the worker has
    checked the video: nothing unchecked is decoded in a web request)."""
    asset = get_object_or_404(
        Asset.objects.filter(owner=request.user, kind=Asset.Kind.VIDEO, status=Asset.Status.READY), pk=pk
    )
    try:
        with media.local_copy(asset.file) as local:
            image = media.first_frame(local)
    except (media.MediaError, OSError):
        raise Http404("No preview.")
    response = HttpResponse(media.thumbnail_jpeg(image), content_type="image/jpeg")
    response["Cache-Control"] = "private, max-age=3600"
    return response
