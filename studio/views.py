"""Pages and the htmx fragments inside them. One view serves a page and its partial."""

from __future__ import annotations

import functools
import hashlib
import html
import inspect
import mimetypes
import re
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.db.models import Q
from django.http import (
    FileResponse,
    Http404,
    HttpResponse,
    HttpResponseRedirect,
    QueryDict,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.template.backends.utils import csrf_input
from django.template.loader import render_to_string
from django.urls import get_script_prefix, reverse
from django.utils.html import format_html
from django.utils.http import content_disposition_header, url_has_allowed_host_and_scheme, urlencode
from django.utils.safestring import mark_safe
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import catalogue, inputs, jobs, keys, media, progress
from .forms import (
    ChainTitleForm,
    FirstAccountForm,
    GenerateForm,
    HandoffPicker,
    ProviderKeyForm,
    as_pk,
    data_from_clip,
    form_field_of,
    initial_from_clip,
    options_initial,
)
from .models import (
    DRIFT_WARN_FROM_STEP,
    Asset,
    Chain,
    ChainExport,
    ChainTree,
    Clip,
    Estimate,
    FirstRun,
    storage_by_kind,
)
from .providers import (
    ProviderError,
    WebhookRefused,
    all_providers,
    enabled_providers,
    find_provider,
    get_provider,
)

GALLERY_PAGE = 24


def _clip_for(request, pk: int, queryset=None) -> Clip:
    """This creator's clip, or 404 (another creator's clip is not theirs to know of)."""
    # `is not None`: a queryset in a boolean test is run, every row of it.
    clips = queryset if queryset is not None else Clip.objects
    return get_object_or_404(clips.visible_to(request.user), pk=pk)


def _asset_for(request, pk: int, **conditions) -> Asset:
    """This creator's asset (meeting `conditions`), or 404, like _clip_for."""
    return get_object_or_404(Asset.objects.filter(owner=request.user, **conditions), pk=pk)


def _export_for(request, pk: int, **conditions) -> ChainExport:
    """This creator's joined film (meeting `conditions`), or 404."""
    return get_object_or_404(ChainExport.objects.filter(owner=request.user, **conditions), pk=pk)


def _model_gone_message(clip: Clip, then: str = "choose another") -> str:
    """Why the clip's model cannot be used again (no longer offered), or "" while it is."""
    if catalogue.find_model(clip.model_ref) is not None:
        return ""
    return f"The model “{clip.model_label}” is not available any more; {then}."


def _model_gone(request, clip: Clip):
    """A redirect with a message when the clip's model is no longer offered, else None."""
    gone = _model_gone_message(clip)
    if not gone:
        return None
    messages.error(request, gone)
    return redirect("home")


# The gallery's status filter: a creator's words, not the job's internal states.
STATUS_FILTERS = {
    "generating": ("Generating", Q(status__in=Clip.UNFINISHED_STATES)),
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
    if params.get("show") == "chains":
        # One card per chain; a clip that nothing continues keeps its own card. The status
        # and model filters are about clips, so they are not offered there.
        found = {"show": "chains", **({"q": q} if q else {})}
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
    choices = {}
    for provider, key, label in Clip.objects.models_used(user.pk):
        choices.setdefault(f"{provider}:{key}", label)
    return sorted(choices.items(), key=lambda item: item[1].lower())


def _chain_gallery(user, before: int | None = None, filters: dict | None = None):
    """One page of chains, newest first (keyset paging on the root's pk), each read whole
    with one recursive query for the page."""
    roots = Clip.objects.visible_to(user).filter(parent__isnull=True)
    if "q" in (filters or {}):
        roots = roots.filter(Q(prompt__icontains=filters["q"]) | Q(chain_row__title__icontains=filters["q"]))
    if before:
        roots = roots.filter(pk__lt=before)
    page = list(roots.order_by("-pk")[: GALLERY_PAGE + 1])
    trees = ChainTree.of_roots(page[:GALLERY_PAGE])
    return [trees[root.pk] for root in page[:GALLERY_PAGE]], len(page) > GALLERY_PAGE


def _gallery_context(request, before: int | None = None) -> dict:
    filters = _gallery_filters(request.GET)
    context = {"filters": filters, "filter_query": urlencode(filters), "clips": [], "chains": []}
    if filters.get("show") == "chains":
        context["chains"], context["has_more"] = _chain_gallery(request.user, before, filters)
        context["last_pk"] = context["chains"][-1].root.pk if context["chains"] else None
    else:
        context["clips"], context["has_more"] = _gallery(request.user, before, filters)
        progress.Lookups.of(request).count_ahead(context["clips"])
        context["last_pk"] = context["clips"][-1].pk if context["clips"] else None
    return context


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
    before = as_pk(request.GET.get("before"))
    if before:
        return render(request, "studio/home.html#gallery_page", _gallery_context(request, before))
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
    initial = _continue_values(parent)
    # ?frame=N (a hand-off frame picked in the chain view or the clip page) comes preselected.
    frame = request.GET.get("frame", "")
    if frame.isascii() and frame.isdigit():
        initial["handoff_frame"] = frame
    gone = _model_gone_message(parent)
    if gone:
        messages.error(request, gone)
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
    if request.method == "POST" and clip.may_bill_twice:
        # A paid job may exist: sending again goes through the page that says so.
        return redirect("send_again", clip.pk)
    if request.method == "POST" and not clip.field_errors:
        jobs.retry_clip(clip)
        if request.htmx:
            return render(
                request,
                "studio/_clip_card.html",
                {"clip": clip},
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
            {"clip": clip, "note": message},
        )
    (messages.success if cancelled else messages.info)(request, message)
    return redirect(reverse("home") + f"#clip-{clip.pk}")


@login_required
@require_http_methods(["GET", "POST"])
def send_again(request, pk):
    """ "Send again" for a clip the provider may have started (its answer was lost) or
    accepted and not finished in time: GET says it may be billed twice and how to check;
    POST sends it again as the same clip."""
    clip = _clip_for(request, pk)
    if not clip.may_bill_twice:
        return redirect(clip)
    gone = _model_gone(request, clip)
    if gone:
        return gone
    if request.method == "POST":
        jobs.retry_clip(clip)
        messages.info(request, f"Clip #{clip.pk} was sent again.")
        return redirect(_next_url(request) or "home")
    provider = jobs.provider_label(clip.provider)
    return render(request, "studio/send_again.html", {"clip": clip, "provider": provider})


@login_required
@require_GET
def clip_card(request, pk):
    """A card again: unfinished cards poll it every 2 s. It reads the user and the clip
    (the session is cached): the count of clips still generating in the page title is
    not read again on each poll; the page takes one off when a card finishes (notify.js)."""
    clip = _clip_for(request, pk, progress.with_place(Clip.objects))
    return render(request, "studio/_clip_card.html", {"clip": clip})


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
        saved, row = keys.stored(provider.name), keys.saved_row(provider.name)
        state.update(
            ending=keys.last_four(provider.api_key),
            saved_ending=keys.last_four(saved),
            has_saved=row is not None,
            # Saved, but the encryption key has changed since.
            unreadable=row is not None and not keys.decrypt(row.encrypted),
            saved_by=row.updated_by if row is not None else None,
            saved_at=row.updated_at if row is not None else None,
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
    provider = find_provider(name)
    if provider is None or not provider.key_setting:  # the simulator takes no key
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
    # A path of this site only: redirect() would take "0" or "home" for a view's name.
    if not target.startswith("/"):
        return ""
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return ""


def _export_blocker(clips) -> str:
    """Why the sequence cannot be joined yet ("" when it can)."""
    for clip in clips:
        if clip.is_ready and clip.colour_pending:
            return (
                f"The colour of clip #{clip.pk} is being matched to the clip before it: the chain can "
                "be joined once its corrected copy is made."
            )
        if clip.status == Clip.Status.FAILED:
            return f"Clip #{clip.pk} failed: try it again or choose another take before joining the chain."
        if clip.status == Clip.Status.CANCELLED:
            return f"Clip #{clip.pk} was cancelled: generate it again or choose another take before joining the chain."
        if not clip.is_ready:
            return f"Clip #{clip.pk} is still generating: the chain can be joined once it is ready."
    return ""


def _specs_of(clips) -> dict:
    """The specs of the models these clips use, by "provider:key", reading each provider's
    list once (a cached list is one query however many steps use it)."""
    used = {clip.provider for clip in clips}
    specs = {}
    for provider in enabled_providers():
        if provider.name in used:
            specs.update({spec.ref: spec for spec in catalogue.models_of(provider)})
    return specs


def _estimate_like(clip: Clip, specs: dict, continuing: bool = False) -> Estimate | None:
    """What one more clip like `clip` will cost: another take with its settings, or
    (`continuing`) the next step, which starts from its last frame. None when its model is
    gone. Another take costs what this clip was estimated at when it was made, inputs and
    all (references, frames), so nothing about it needs reading again."""
    spec = specs.get(clip.model_ref)
    if spec is None:
        return None
    if spec.is_free:
        return Estimate(Decimal(0))
    if not continuing and clip.cost_estimate is not None:
        return Estimate(clip.cost_estimate, clip.cost_unit)
    options = {"start_mode": "first_frame", "frames": 1} if continuing else {}
    amount = spec.estimate_cost(clip.duration, clip.resolution, clip.generate_audio, **options)
    return Estimate(amount, spec.cost_unit)


def _chain_tree(request, pk: int) -> tuple[ChainTree, Clip]:
    """The chain of one of this creator's clips (404 for anyone else's), and that clip. An
    action sent from a chain view names its chain (`chain`, the root's pk): a clip that is
    not, or no longer, part of that chain is 404 too, rather than changing another chain."""
    tree = ChainTree.of_pk(request.user.pk, pk)
    if tree is None:  # not this creator's clip (or a loop of parents with no root)
        clip = _clip_for(request, pk)
        tree = ChainTree([clip], clip)
    clip = tree.by_pk[pk]
    named = request.POST.get("chain") if request.method == "POST" else None
    if named is not None and named != str(tree.root.pk):
        raise Http404("That clip is not part of this chain.")
    return tree, clip


_URL_SENTINEL = 987654321
# What the chain view links to for each of its clips, by the name the templates use.
CLIP_LINKS = {
    "video": "clip_video",
    "thumbnail": "clip_thumbnail",
    "detail": "clip_detail",
    "use": "choose_take",
    "retry": "chain_retry",
    "fix": "retry_clip",
    "again": "chain_generate_again",
    "continue": "chain_continue",
    "more": "continue_clip",
    "played": "clip_played_video",
    "colour": "clip_colour",
}


@functools.lru_cache(maxsize=64)
def _url_pattern(name: str, prefix: str) -> str:
    """A URL that takes one pk, as a pattern reversed once per process (and script prefix):
    a chain of 50 steps names about a thousand of them, and each reverse costs a template
    tag's worth of time."""
    return reverse(name, args=[_URL_SENTINEL]).replace(str(_URL_SENTINEL), "{}")


def _clip_links(clip: Clip) -> dict:
    prefix = get_script_prefix()
    links = {key: _url_pattern(name, prefix).format(clip.pk) for key, name in CLIP_LINKS.items()}
    for key, pk in (("first_frame", clip.first_frame_id), ("last_frame", clip.last_frame_id)):
        links[key] = _url_pattern("asset_file", prefix).format(pk) if pk else ""
    # What the sequence plays: the clip's own video, or its colour-matched copy. That address
    # plays another file whenever a copy is made again: the query keeps a browser from
    # playing the one it cached.
    if clip.plays_matched:
        version = hashlib.blake2s(clip.matched_video.name.encode(), digest_size=4).hexdigest()
        links["played"] += f"?v={version}"
    else:
        links["played"] = links["video"]
    return links


def _take_card(take: Clip, step, number: int, confirm, adds, form_fields: str, labels: dict) -> str:
    """One take's card in the chain view, as HTML. A chain of 50 steps draws 150 of them:
    as a template each cost about half a millisecond, and with format_html a third of that,
    which kept the chain view past twice the gallery page's time (bench/chain.py). So it is
    written out here, and every value from the clip goes through `escape` (the stdlib's,
    which escapes the same characters as Django's)."""
    e = html.escape
    chosen = take.pk == step.clip.pk
    links = take.links
    status, status_label = take.status, e(labels[take.status])
    label = e(f"Take {number} of step {step.number} (clip #{take.pk})")
    data = ""
    if take.is_ready:
        video, poster, played = e(links["video"]), e(links["thumbnail"]), e(links["played"])
        media_html = (
            f'<video id="player-{take.pk}" hx-preserve controls preload="metadata" playsinline '
            f'poster="{poster}" src="{video}" aria-label="{label}"></video>'
        )
        # Compare plays what the sequence plays (a colour-matched copy, when there is one).
        data = (
            f' data-src="{played}" data-poster="{poster}" data-start="{step.cut.start:.4f}"'
            f' data-continue-url="{e(links["more"])}"'
        )
    elif take.ended_without_video:
        media_html = f'<div class="placeholder placeholder--failed"><span>{status_label}</span></div>'
    else:
        background = (
            f'<img src="{e(links["first_frame"])}" alt="" class="placeholder-bg">'
            if links["first_frame"]
            else ""
        )
        media_html = (
            f'<div class="placeholder">{background}<span class="spinner" aria-hidden="true"></span>'
            f"<span>{status_label}…</span></div>"
        )
    length = take.video_duration or take.duration
    seconds = "" if not length else f"{length:.0f} s" if length == int(length) else f"{length:.1f} s"
    meta = " · ".join(part for part in (take.model_label, seconds, take.cost_text) if part)
    short = take.prompt if len(take.prompt) <= 120 else take.prompt[:119].rstrip() + "…"
    notes = []
    if take.problem:
        notes.append(f'<p class="error-text" role="alert">{e(take.problem)}</p>')
    if take.ended_without_video:
        notes.append(f'<p class="error-text">{e(take.error or "The provider could not make this clip.")}</p>')
        if take.field_errors:
            notes.append(f'<a class="button button--ghost" href="{e(links["fix"])}">Fix and try again</a>')
        else:
            cost = adds(take)
            described = f' aria-describedby="retry-cost-{take.pk}"' if cost else ""
            retry = e(links["retry"])
            notes.append(
                f'<form method="post" action="{retry}" class="inline" hx-post="{retry}" hx-target="#chain-live" '
                f'hx-swap="outerHTML" hx-disabled-elt="find button">{form_fields}'
                f'<button class="button" type="submit"{described}>Try again</button></form>'
            )
            if cost:
                notes.append(f' <span class="help adds" id="retry-cost-{take.pk}">{e(str(cost))}</span>')
    elif take.is_ready and not chosen and step.number > 1:
        if confirm and confirm["take"].pk == take.pk:
            notes.append(_confirm_html(confirm, take, f"Use take {number}", form_fields))
        else:
            use = e(links["use"])
            notes.append(
                f'<form method="post" action="{use}" hx-post="{use}" hx-target="#chain-live" hx-swap="outerHTML">'
                f'{form_fields}<button class="button" type="submit" aria-label="Use this take (take {number}, '
                f'clip #{take.pk})">Use this take</button></form>'
            )
    badge = ' <span class="badge">In the sequence</span>' if chosen else ""
    return mark_safe(
        f'<li class="take take--{status}{" take--chosen" if chosen else ""}" id="take-{take.pk}" data-take '
        f'data-label="Take {number}"{data} tabindex="-1" data-shortcut-item data-shortcut-name="{label}"><div class="take-media" style="aspect-ratio: {e(take.css_ratio)}">'
        f'{media_html}</div><div class="take-body"><p class="take-title"><span class="status status--{status}">'
        f'{status_label}</span> Take {number} · <a href="{e(links["detail"])}">Clip #{take.pk}</a>{badge}</p>'
        f'<p class="seq-prompt" title="{e(take.prompt)}">{e(short)}</p><p class="meta">{e(meta)}</p>'
        f"{''.join(notes)}</div></li>"
    )


def _confirm_html(confirm, clip: Clip, label: str, form_fields) -> str:
    return render_to_string(
        "studio/_chain_confirm.html",
        {
            "confirm": confirm,
            "id": clip.pk,
            "url": clip.links["use"],
            "label": label,
            "form_fields": form_fields,
        },
    )


def _timeline_entry(step) -> dict:
    """One step of the sequence player's timeline: where its clip starts and ends (the cut)."""
    clip, cut = step.clip, step.cut
    state = "" if clip.is_ready else f", {clip.status_label.lower()}"
    return {
        "number": str(step.number),
        "pk": str(clip.pk),
        "ready": clip.is_ready,
        "status": clip.status,
        "links": clip.links,
        "src": clip.links["played"],
        "has_thumbnail": bool(clip.thumbnail),
        "grow": f"{cut.seconds:.3f}",
        "start": f"{cut.start:.4f}",
        "end": f"{cut.end:.4f}",
        "fps": f"{cut.fps:.4f}",
        "label": f"{step.number} · {cut.seconds:.1f} s"
        if clip.is_ready
        else f"{step.number} · {clip.status_label}",
        "aria": f"Step {step.number}, clip #{clip.pk}, {cut.seconds:.1f} s{state}",
    }


def _chain_context(request, tree: ChainTree, opened: Clip, **extra) -> dict:
    """Everything the chain view and its live fragment show, from one read of the tree."""
    specs = _specs_of(tree.clips)
    costs = tree.costs()
    steps = tree.steps
    clips = tree.sequence

    def adding(clip, continuing=False):
        estimate = _estimate_like(clip, specs, continuing)
        return None if estimate is None else costs.adding(estimate)

    labels = {value: str(label) for value, label in Clip.Status.choices}
    take_errors = extra.pop("take_errors", {})
    for clip in tree.clips:
        clip.links = _clip_links(clip)
        clip.problem = take_errors.get(clip.pk, "")
    last = tree.last
    note = ""
    if not tree.in_sequence(opened):
        branch = tree.branch_of(opened)
        if branch is not None:
            note = f"Clip #{opened.pk} is on a branch ({branch.steps_text.lower()}), listed under “Branches”."
        else:
            note = (
                f"Clip #{opened.pk} is a take the sequence does not use: it is shown beside the take in use."
            )
    context = {
        "tree": tree,
        "opened": opened,
        "opened_note": note,
        "steps": steps,
        "clips": clips,
        "last": last,
        "costs": costs,
        "branches": tree.branches(),
        "signature": tree.signature(),
        "poll": tree.unfinished,
        "continue_adds": adding(last, continuing=True) if last.is_ready and last.last_frame_id else None,
        "clip": opened,
        "export": ChainExport.latest_for(request.user, clips),
        "blocker": _export_blocker(clips),
        "confirm": None,
        "continue_form": None,
        # The same on every form of the page: the CSRF token, the chain it was sent from and
        # the clip the page shows.
        "form_fields": format_html(
            '{}<input type="hidden" name="chain" value="{}"><input type="hidden" name="opened" value="{}">',
            csrf_input(request),
            tree.root.pk,
            opened.pk,
        ),
    }
    context.update(extra)
    if last.is_ready and last.video_frames:
        sent = context["continue_form"] or {}
        context["picker"] = HandoffPicker(
            last,
            chosen=str(sent.get("handoff_frame", "")),
            any_value=str(sent.get("handoff_any", "")),
            errors=sent.get("handoff_errors", []),
            any_errors=sent.get("handoff_any_errors", []),
            prefix=f"next-handoff-{last.pk}",
            preserve=True,
        )
    matchable = [c for c in clips[1:] if c.is_ready and not c.repeated_frames]
    context["colour_all"] = bool(matchable) and all(c.colour_match for c in matchable)
    context["colour_any"] = bool(matchable)
    context["seam_limits"] = SEAM_LIMITS
    context["poll"] = context["poll"] or tree.media_pending
    if context["confirm"] is not None:
        context["poll"] = False  # hold the page still while a question waits for its answer
        context["confirm"]["back"] = opened.pk  # "Cancel" shows the page as it was
    previous = None
    for step in steps:
        step.seam = _seam_panel(step, previous) if previous is not None else None
        previous = step
        step.again = adding(step.clip) if step.number > 1 and step.clip.is_finished else None
        step.cards = [
            _take_card(take, step, number, context["confirm"], adding, context["form_fields"], labels)
            for number, take in enumerate(step.takes, 1)
        ]
        step.entry = _timeline_entry(step)
    return context


# What the chain view says about its seam and drift thresholds (chosen from measurement:
# bench/RESULTS.md, "How the thresholds were chosen"; media.SEAM_JUMP_* and DRIFT_WARN).
SEAM_LIMITS = {
    "difference": f"{media.SEAM_JUMP_DIFFERENCE:g}",
    "colour": f"{media.SEAM_JUMP_COLOUR:g}",
    "drift": f"{media.DRIFT_WARN:g}",
    "drift_from": DRIFT_WARN_FROM_STEP,
}


def _seam_panel(step, previous) -> dict:
    """The seam into `step` from the step before, as the chain view shows it: the two
    pictures and their figures (measured by the worker), the drift against step 1, and the
    colour match of this step."""
    clip, parent = step.clip, previous.clip
    seam = clip.seam if clip.is_ready else None
    measuring = clip.is_ready and (clip.media_due_at is not None or clip.colour_pending)
    error = (clip.figures or {}).get("error", "") if clip.is_ready else ""
    frame = seam.parent_frame if seam is not None else None
    if frame is None:
        frame = clip.handoff_of(parent)
    return {
        "clip": clip,
        "parent": parent,
        "from_step": previous.number,
        "seam": seam,
        "measuring": measuring and seam is None,
        "updating": measuring and seam is not None,
        "error": error,
        "frame": frame,
        "drift_warns": seam is not None and seam.drift_warns(step.number),
        "colour": clip.colour_match,
        "colour_state": clip.colour_state,
        "colour_label": clip.get_colour_state_display(),
        "colour_error": clip.colour_error,
        "extended": bool(clip.repeated_frames),
        # The seam's pictures are drawn again when it is measured again (a colour match).
        "version": hashlib.blake2s((seam.before_image if seam else "").encode(), digest_size=4).hexdigest(),
    }


def _chain_answer(request, tree: ChainTree, clip: Clip, status: int = 200, **extra):
    """After an action on `clip` in the chain view: the live fragment again (htmx), else the
    page. The page goes on showing the chain as opened from its own clip (`opened`)."""
    named = as_pk(request.POST.get("opened"))
    opened = tree.by_pk.get(named, clip) if named else clip
    context = _chain_context(request, tree, opened, **extra)
    if request.htmx:
        return render(request, "studio/_chain_live.html", context, status=status)
    return render(request, "studio/chain.html", context, status=status)


@login_required
@require_GET
def chain_view(request, pk):
    """The chain view: the chain's one sequence (whichever of its clips `pk` is), a player
    for it, every step with its takes side by side, the branches, the cost so far, and the
    join. The live part polls itself while anything is unfinished."""
    tree, opened = _chain_tree(request, pk)
    # Steps made before seams were measured (or whose measurement was lost) are measured
    # now, in the worker; the page shows them as they come.
    jobs.ask_to_measure([c for c in tree.sequence if c.is_ready and not c.figures and c.media_due_at is None])
    context = _chain_context(request, tree, opened)
    context["editing_title"] = request.GET.get("edit") == "title"
    context["title_form"] = ChainTitleForm(initial={"title": tree.title})
    return render(request, "studio/chain.html", context)


@login_required
@require_GET
def chain_card(request, pk):
    """A chain's card in the gallery again (it polls while a step is generating)."""
    tree, _ = _chain_tree(request, pk)
    return render(request, "studio/_chain_card.html", {"tree": tree})


@login_required
@require_GET
def chain_live(request, pk):
    """The live part of the chain view. `v` is the state the page shows: while nothing
    changed the answer is 204 (nothing to swap, the poll goes on)."""
    tree, opened = _chain_tree(request, pk)
    if request.GET.get("v") == tree.signature() and (tree.unfinished or tree.media_pending):
        return HttpResponse(status=204)
    return render(request, "studio/_chain_live.html", _chain_context(request, tree, opened))


@login_required
@require_http_methods(["GET", "POST"])
def chain_title(request, pk):
    """The chain's title, edited in place: GET the form (or, with ?cancel, the title
    again), POST a new one. An empty or too long title is refused beside the field."""
    tree, opened = _chain_tree(request, pk)
    context = {"tree": tree, "opened": opened}
    if request.method == "GET":
        editing = "cancel" not in request.GET
        form = ChainTitleForm(initial={"title": tree.title})
        return render(request, "studio/_chain_title.html", {**context, "editing": editing, "form": form})
    form = ChainTitleForm(request.POST)
    if not form.is_valid():
        if request.htmx:
            return render(
                request, "studio/_chain_title.html", {**context, "editing": True, "form": form}, status=422
            )
        page = _chain_context(request, tree, opened, editing_title=True, title_form=form)
        return render(request, "studio/chain.html", page, status=422)
    Chain.set_title(tree.root, form.cleaned_data["title"])
    tree = ChainTree.of(opened)
    if request.htmx:
        return render(request, "studio/_chain_title.html", {"tree": tree, "opened": opened, "editing": False})
    messages.success(request, "Title saved.")
    return redirect("chain_view", opened.pk)


@login_required
@require_POST
def choose_take(request, pk):
    """ "Use this take" (and "Switch to this branch"): the sequence goes on through this
    take. When later steps continue from the take in use, it asks first; they stay as a
    branch. An unfinished or failed take is refused with a message beside it."""
    tree, take = _chain_tree(request, pk)
    if take.parent_id is None:
        raise Http404("This clip is not a take of another clip.")
    if not take.is_ready:
        why = "failed, so it cannot be used" if take.status == Clip.Status.FAILED else "is still generating"
        return _refused(request, tree, take, f"Clip #{take.pk} {why}: a take can be used once it is ready.")
    displaced = tree.displaced_by(take)
    if displaced is not None and request.POST.get("confirm") != "yes":
        return _chain_answer(request, tree, take, confirm={"take": take, "displaced": displaced})
    take.use_as_take()
    if not request.htmx:
        return redirect("chain_view", take.pk)
    return _chain_answer(request, ChainTree.of(take), take)


def _refused(request, tree: ChainTree, clip: Clip, message: str):
    """An action on a take the studio will not do: the reason beside that take (htmx), else
    at the top of the chain view."""
    if not request.htmx:
        messages.error(request, message)
        return redirect("chain_view", clip.pk)
    return _chain_answer(request, tree, clip, status=422, take_errors={clip.pk: message})


def _start_from_chain(request, clip: Clip, form, what: str):
    """Start the clip a valid form describes, from the chain view of `clip`."""
    new = jobs.start_clip(request.user, form.spec, **form.clip_fields())
    return _chain_generated(request, clip, new, f"Generating clip #{new.pk}, {what}.")


def _chain_generated(request, opened: Clip, new: Clip, message: str):
    """The chain view after a new take or step was started from it."""
    if not request.htmx:
        messages.success(request, message)
        return redirect("chain_view", new.pk)
    return _chain_answer(request, ChainTree.of(opened), opened)


@login_required
@require_POST
def chain_generate_again(request, pk):
    """ "Generate again" in the chain view: a new take of this step with the same settings,
    shown beside the others at once, live."""
    tree, clip = _chain_tree(request, pk)
    form = GenerateForm(data_from_clip(clip), user=request.user)
    if not form.is_valid():
        return _refused(
            request, tree, clip, "This take cannot be made again as it was: " + _form_problems(form)
        )
    return _start_from_chain(request, clip, form, "a new take of this step")


@login_required
@require_POST
def chain_retry(request, pk):
    """ "Try again" in place, for a failed take: the same clip, sent again."""
    tree, clip = _chain_tree(request, pk)
    if clip.field_errors:
        return redirect("retry_clip", clip.pk)  # the form, with the provider's objections
    gone = _model_gone_message(clip, then="choose another with Remix")
    if gone:
        return _refused(request, tree, clip, gone)
    jobs.retry_clip(clip)
    return _chain_generated(request, clip, clip, f"Clip #{clip.pk} is sent again.")


def _continue_values(parent: Clip) -> dict:
    """The generate form's values to continue a clip: its last frame as the hand-off (the
    first frame), the same model, aspect ratio and duration."""
    return {
        "model": parent.model_ref,
        "aspect_ratio": parent.aspect_ratio,
        "duration": parent.duration,
        "parent": parent.pk,
        "first_frame_asset": parent.last_frame_id,
        "handoff_frame": parent.last_index,
        "start_mode": "first_frame",
        # With sound when the clip it continues has sound, so the chain keeps it.
        "generate_audio": bool(parent.generate_audio),
    }


def _form_problems(form) -> str:
    """A bound form's errors as one plain sentence (for a form the page does not show)."""
    found = []
    for name, errors in form.errors.items():
        label = form.fields[name].label if name in form.fields else ""
        found += [f"{label}: {e}" if label else e for e in errors]
    return " ".join(found)


@login_required
@require_POST
def chain_continue(request, pk):
    """ "Continue from last frame" in the chain view: the next step from the last frame of
    `pk`, with its settings and a new prompt; it appears as the next step, live. A problem
    with the prompt is shown beside it; anything else points to the full form."""
    tree, parent = _chain_tree(request, pk)
    if not parent.is_ready or parent.last_frame_id is None:
        raise Http404("That clip has no last frame to continue from.")
    values = _continue_values(parent)
    values.update(
        {
            "prompt": request.POST.get("prompt", ""),
            "resolution": parent.resolution,
            "generate_audio": "on" if parent.generate_audio else "",
        }
    )
    # The hand-off frame picked in the strip (or typed, "any"): the last frame by default.
    for name in ("handoff_frame", "handoff_any"):
        if request.POST.get(name, "") != "":
            values[name] = request.POST[name]
    data = QueryDict(mutable=True)
    data.update({name: str(value) for name, value in values.items() if value not in (None, "")})
    form = GenerateForm(data, user=request.user)
    if not form.is_valid():
        shown = {"prompt", "handoff_frame", "handoff_any"}
        return _chain_answer(
            request,
            tree,
            parent,
            status=422,
            continue_form={
                "prompt": data.get("prompt", ""),
                "prompt_errors": form.errors.get("prompt", []),
                "handoff_frame": data.get("handoff_frame", ""),
                "handoff_any": data.get("handoff_any", ""),
                "handoff_errors": form.errors.get("handoff_frame", []),
                "handoff_any_errors": form.errors.get("handoff_any", []),
                "other_errors": _form_problems(form) if set(form.errors) - shown else "",
            },
        )
    return _start_from_chain(request, parent, form, "the next step")


@login_required
@require_POST
def clip_colour(request, pk):
    """ "Match colour to the previous clip" at one seam (the step of clip `pk`), or undo it
    (`match=0`): the worker renders the corrected copy; the page shows it once it is made."""
    tree, clip = _chain_tree(request, pk)
    if clip.parent_id is None or clip.parent_id not in tree.by_pk:
        return _refused(request, tree, clip, "The first step has no previous clip to match the colour to.")
    if not clip.is_ready:
        return _refused(
            request, tree, clip, f"Clip #{clip.pk} is not ready: its colour can be matched once it is."
        )
    jobs.set_colour_match([clip], request.POST.get("match") != "0")
    return _chain_after_change(request, clip)


@login_required
@require_POST
def chain_colour(request, pk):
    """ "Match colour to the previous clip" at every seam of the sequence, or undo it all."""
    tree, clip = _chain_tree(request, pk)
    jobs.set_colour_match([c for c in tree.sequence[1:] if c.is_ready], request.POST.get("match") != "0")
    return _chain_after_change(request, clip)


def _chain_after_change(request, clip: Clip):
    if not request.htmx:
        return redirect("chain_view", clip.pk)
    return _chain_answer(request, ChainTree.of(clip), clip)


@login_required
@require_POST
def start_chain_export(request, pk):
    """ "Download the whole chain": join the chain's current sequence."""
    tree, clip = _chain_tree(request, pk)
    clips = tree.sequence
    blocker = _export_blocker(clips)
    export = None if blocker else jobs.start_export(request.user, clips)
    if request.htmx:
        return render(
            request,
            "studio/_chain_export.html",
            {
                "clip": clip,
                "export": export or ChainExport.latest_for(request.user, clips),
                "blocker": blocker,
            },
            status=409 if blocker else 200,
        )
    if blocker:
        messages.error(request, blocker)
    return redirect("chain_view", clip.pk)


@login_required
@require_GET
def chain_export(request, pk):
    """The join's progress (an htmx fragment that polls itself until it is done)."""
    export = _export_for(request, pk)
    clip = export.clip
    return render(request, "studio/_chain_export.html", {"clip": clip, "export": export, "blocker": ""})


@login_required
@require_GET
def chain_export_file(request, pk):
    """The joined film, named after the chain's title."""
    export = _export_for(request, pk, status=ChainExport.Status.READY)
    if not export.file:
        raise Http404("This join has no file.")
    return serve_file(request, export.file.name, "video/mp4", download_name=export.download_name())


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

# ASCII digits only (`\d` also matches "١٢"). A position past 18 digits is read as "beyond
# any file" rather than converted (int() refuses 4,300+ digits): still a Range, answered by
# the rules below, never a 500.
RANGE_RE = re.compile(r"bytes=([0-9]*)-([0-9]*)$")
RANGE_BEYOND = 10**18


def _range_number(text: str) -> int:
    return int(text) if len(text) <= 18 else RANGE_BEYOND


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
            start = _range_number(start_s)
            end = min(_range_number(end_s), size - 1) if end_s else size - 1
        else:
            start, end = max(0, size - _range_number(end_s)), size - 1
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
def clip_played_video(request, pk):
    """The video the sequence player plays for a step: its colour-matched copy when it has
    one, else its own video (the join uses the same file)."""
    clip = _clip_for(request, pk)
    played = clip.played_video
    if not played:
        raise Http404("This clip has no video yet.")
    return serve_file(request, played.name, "video/mp4")


@login_required
@require_GET
def clip_strip_frame(request, pk, index):
    """One frame of the clip's hand-off strip, as the worker stored it (nothing is decoded
    here). The images of a clip never change, so browsers keep them."""
    clip = _clip_for(request, pk)
    name = next(
        (e.get("name") for e in clip.strip or [] if isinstance(e, dict) and e.get("index") == index), None
    )
    if not name:
        raise Http404("That frame is not in the clip's strip.")
    response = serve_file(request, name, "image/jpeg")
    response["Cache-Control"] = "private, max-age=86400, immutable"
    return response


@login_required
@require_GET
def clip_seam_image(request, pk, side):
    """The two pictures of the seam into a clip, as measured: "before" (the parent's hand-off
    frame) and "after" (this clip's first frame shown)."""
    clip = _clip_for(request, pk)
    name = (clip.figures or {}).get(f"{side}_image") if side in ("before", "after") else None
    if not name:
        raise Http404("This seam has not been measured.")
    return serve_file(request, name, "image/jpeg")


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
    asset = _asset_for(request, pk)
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
        user = form.admin_user()
        if not FirstRun.admit(user):
            # Several posts at once each saw a studio with no user: one of them won.
            messages.info(request, "The studio's first account was created a moment ago: sign in with it.")
            return redirect("login")
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("home")
    return render(request, "registration/setup.html", {"form": form})


def sign_in_locked(request, original_response=None, credentials=None):
    """The sign-in page when django-axes has stopped sign-in for this account or address
    (AXES_LOCKOUT_CALLABLE): the form again with a plain message, 429. It ends by itself."""
    minutes = settings.AXES_COOLOFF_TIME.total_seconds() / 60
    wait = f"{minutes:.0f} minute{'s' if round(minutes) != 1 else ''}"
    message = (
        f"Too many wrong passwords for this account or from this address. Sign-in is paused: "
        f"try again in {wait}."
    )
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    form = AuthenticationForm(request, initial={"username": username[:150]})
    context = {"form": form, "locked": message, "next": _next_url(request)}
    return render(request, "registration/login.html", context, status=429)


@login_required
@require_GET
def account(request):
    """The creator's account: what their clips, uploads and joined films take in storage,
    and the quota when there is one."""
    sums = storage_by_kind(request.user)
    used, quota = sum(sums.values()), settings.STUDIO_USER_QUOTA_BYTES
    context = {**sums, "used": used, "quota": quota}
    if quota:
        context.update(
            used_capped=min(used, quota), percent=min(100, round(100 * used / quota)), full=used >= quota
        )
    return render(request, "studio/account.html", context)


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
    asset = _asset_for(request, pk)
    field = request.GET.get("field", "")
    if field not in inputs.INPUTS or inputs.INPUTS[field][0] != asset.kind:
        raise Http404("No such input.")
    return render(request, "studio/_held_asset.html", _held_context(asset, field))


@login_required
@require_GET
def asset_poster(request, pk):
    """The first frame of a held video, as the worker stored it when it checked the video
    (nothing is decoded in a web request)."""
    asset = _asset_for(request, pk, kind=Asset.Kind.VIDEO, status=Asset.Status.READY)
    if not asset.poster:
        raise Http404("No preview.")
    return serve_file(request, asset.poster.name, "image/jpeg")
