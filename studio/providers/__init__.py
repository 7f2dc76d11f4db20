"""The registry: every provider the studio knows, built once per process.

Adding a provider is one module under studio/providers/ and one line here (CONTRIBUTING.md).
Each provider says itself whether it is enabled (from its own settings), so nothing outside
this package needs to know which providers exist.
"""

from __future__ import annotations

import threading

from django.conf import settings
from django.utils.module_loading import import_string

from .base import ModelSpec, Provider, ProviderError, RemoteStatus, Submission, WebhookRefused  # noqa: F401

# Name → class, in the order the Model select lists them.
REGISTRY = {
    "simulator": "studio.providers.simulator.SimulatorProvider",
    "pictory": "studio.providers.pictory.PictoryProvider",
    "openrouter": "studio.providers.openrouter.OpenRouterProvider",
}

_built: dict[str, Provider] = {}
_lock = threading.Lock()


def all_providers() -> list[Provider]:
    """Every registered provider, enabled or not. Instances are made once and kept: each
    hosted provider holds its connection pool."""
    if not _built:
        with _lock:
            if not _built:
                _built.update({name: import_string(path)() for name, path in REGISTRY.items()})
    return list(_built.values())


def enabled_providers() -> list[Provider]:
    return [provider for provider in all_providers() if provider.is_enabled()]


def get_provider(name: str) -> Provider:
    """The enabled provider called `name`, or LookupError."""
    for provider in all_providers():
        if provider.name == name and provider.is_enabled():
            return provider
    raise LookupError(f"The provider {name!r} is not enabled.")


def secret_values() -> list[str]:
    """The values of every provider's secret settings that are set (to keep them out of
    pages and logs, and for the tests that check so)."""
    names = {name for provider in all_providers() for name in provider.secret_settings}
    return [value for value in (getattr(settings, name, "") for name in sorted(names)) if value]
