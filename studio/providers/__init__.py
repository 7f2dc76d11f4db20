"""The registry: which providers are enabled, and finding a model by its "provider:key"."""

from __future__ import annotations

from django.conf import settings

from .base import ModelSpec, Provider, ProviderError, RemoteStatus, Submission  # noqa: F401


def enabled_providers() -> list[Provider]:
    """Providers switched on by the environment, in the order the Model select lists them."""
    from .simulator import SimulatorProvider

    found: list[Provider] = []
    if settings.SIMULATOR_ENABLED:
        found.append(SimulatorProvider())
    if settings.PICTORY_API_KEY:
        from .pictory import PictoryProvider

        found.append(PictoryProvider.shared())
    if settings.OPENROUTER_API_KEY:
        from .openrouter import OpenRouterProvider

        found.append(OpenRouterProvider.shared())
    return found


def get_provider(name: str) -> Provider:
    for provider in enabled_providers():
        if provider.name == name:
            return provider
    raise LookupError(f"The provider {name!r} is not enabled.")


def all_models() -> list[ModelSpec]:
    return [spec for provider in enabled_providers() for spec in provider.models()]


def find_model(ref: str) -> ModelSpec | None:
    """The spec named by a "provider:key" value, or None when no enabled provider has it."""
    provider_name, _, key = (ref or "").partition(":")
    for provider in enabled_providers():
        if provider.name == provider_name:
            return next((m for m in provider.models() if m.key == key), None)
    return None
