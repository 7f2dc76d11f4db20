"""Which models the studio offers: the fixed lists of providers that have one, and the cached
lists of providers that publish theirs (read from the service, kept in the database).

Pages never wait on the network for a list, except when nothing was ever read: then one
short try, and after a failure none for a minute (the worker's schedule and "Refresh
models" keep trying).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import IntegrityError
from django.utils import timezone
from django.utils.timesince import timesince

from .models import ModelOverride, ProviderModelCache
from .providers import ModelSpec, Provider, ProviderError, enabled_providers

log = logging.getLogger(__name__)

PAGE_FETCH_TIMEOUT = 5.0
RETRY_FROM_PAGE_AFTER = timedelta(minutes=1)

# Parsed lists by provider, kept while the cached row is unchanged (same fetched_at).
_parsed: dict[str, tuple[object, list[ModelSpec]]] = {}


def models_of(provider: Provider) -> list[ModelSpec]:
    """Every model of the provider as the studio knows it: its list, with what the admin
    set per model (ModelOverride) applied."""
    return _with_overrides(provider, _listed(provider))


def offered(specs: list[ModelSpec]) -> list[ModelSpec]:
    """The models a creator can use: not those that need a video to work on (upscalers,
    editors), which the Providers page lists as not supported yet."""
    return [spec for spec in specs if not spec.needs_video_input]


def _with_overrides(provider: Provider, specs: list[ModelSpec]) -> list[ModelSpec]:
    if not specs:
        return specs
    overrides = {o.model_key: o for o in ModelOverride.objects.filter(provider=provider.name)}
    return [overrides[s.key].apply(s) if s.key in overrides else s for s in specs]


def _listed(provider: Provider) -> list[ModelSpec]:
    if not provider.publishes_models:
        return provider.models()
    row = ProviderModelCache.objects.filter(provider=provider.name).first()
    never_read = row is None or row.fetched_at is None
    if never_read and (
        row is None or row.checked_at is None or timezone.now() - row.checked_at > RETRY_FROM_PAGE_AFTER
    ):
        try:
            refresh(provider, timeout=PAGE_FETCH_TIMEOUT)
        except ProviderError as exc:
            log.warning("%s model list unavailable: %s", provider.label, exc.message)
        row = ProviderModelCache.objects.filter(provider=provider.name).first()
    if row is None or row.fetched_at is None:
        return []
    parsed = _parsed.get(provider.name)
    if parsed is None or parsed[0] != row.fetched_at:
        parsed = _parsed[provider.name] = (row.fetched_at, provider.specs_from(row.data))
    return list(parsed[1])


def model_groups() -> list[tuple[Provider, list[ModelSpec]]]:
    """The enabled providers with their models, in registry order (empty lists left out)."""
    groups = [(provider, offered(models_of(provider))) for provider in enabled_providers()]
    return [(provider, specs) for provider, specs in groups if specs]


def find_model(ref: str) -> ModelSpec | None:
    """The spec named by a "provider:key" value, or None when no enabled provider has it."""
    provider_name, _, key = (ref or "").partition(":")
    for provider in enabled_providers():
        if provider.name == provider_name:
            return next((m for m in offered(models_of(provider)) if m.key == key), None)
    return None


def refresh(provider: Provider, timeout: float | None = None) -> int:
    """Read the provider's list again and keep it; return how many models it has. A failure
    keeps the last good list and records the error for the Providers page."""
    now = timezone.now()
    try:
        entries = provider.fetch_model_entries(timeout=timeout)
    except ProviderError as exc:
        _save(provider.name, {"checked_at": now, "error": exc.message})
        raise
    _save(provider.name, {"data": entries, "fetched_at": now, "checked_at": now, "error": ""})
    return len(provider.specs_from(entries))


def refresh_due(provider: Provider) -> bool:
    """Whether the schedule should read this provider's list again now."""
    if not provider.publishes_models:
        return False
    row = ProviderModelCache.objects.filter(provider=provider.name).first()
    if row is None or row.fetched_at is None:
        return True
    minutes = max(1.0, float(provider.refresh_minutes))
    return timezone.now() - row.fetched_at >= timedelta(minutes=minutes)


def note(provider: Provider) -> str:
    """Where a published list stands, for the Providers page ("" for fixed lists)."""
    if not provider.publishes_models:
        return ""
    row = ProviderModelCache.objects.filter(provider=provider.name).first()
    if row is None or (row.fetched_at is None and not row.error):
        return f"{provider.label}'s model list has not been read yet."
    if row.fetched_at is None:
        return (
            f"Could not read {provider.label}'s model list: {row.error} No {provider.label} model is "
            "offered until it can be read; try “Refresh models”."
        )
    listed = models_of(provider)
    count, unsupported = len(listed), len(listed) - len(offered(listed))
    text = f"{count} video model{'s' if count != 1 else ''}"
    if unsupported:
        text += f" ({unsupported} not supported yet)"
    text += f", list read {timesince(row.fetched_at)} ago."
    if row.error:
        text += f" The last try to read it again failed: {row.error}"
    return text


def _save(name: str, values: dict) -> None:
    if ProviderModelCache.objects.filter(provider=name).update(**values):
        return
    try:
        ProviderModelCache.objects.create(provider=name, **values)
    except IntegrityError:  # another process created it first
        ProviderModelCache.objects.filter(provider=name).update(**values)
