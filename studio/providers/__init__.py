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
from .redact import read_secrets_from

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


def find_provider(name: str) -> Provider | None:
    """The registered provider called `name`, enabled or not, or None."""
    return next((provider for provider in all_providers() if provider.name == name), None)


def get_provider(name: str) -> Provider:
    """The enabled provider called `name`, or LookupError."""
    provider = find_provider(name)
    if provider is None or not provider.is_enabled():
        raise LookupError(f"The provider {name!r} is not enabled.")
    return provider


def secret_values() -> list[str]:
    """The values of every provider's secrets that are set: each hosted provider's key as it
    reads it (`api_key`, wherever the key is kept) and its other secret settings. Used to
    keep them out of pages, logs and the database (studio.providers.redact), and by the
    tests that check so."""
    providers = all_providers()
    names = {name for provider in providers for name in provider.secret_settings}
    values = [getattr(settings, name, "") for name in sorted(names)]
    for provider in providers:
        try:
            values.append(getattr(provider, "api_key", ""))
        except Exception:  # a stored key that cannot be read now: the settings still count
            continue
    return list(dict.fromkeys(value for value in values if isinstance(value, str) and value))


# Every redaction (pages, logs, the database) reads the secrets through the registry.
read_secrets_from(secret_values)
