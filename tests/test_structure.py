"""The shape of the code that keeps it easy to change: providers plug in through one
registry, dependencies point one way, and a provider's name stays inside its own module."""

import ast
import re
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from studio import catalogue
from studio.models import ProviderModelCache
from studio.providers import REGISTRY, all_providers, enabled_providers

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "studio"


def studio_imports(path: Path) -> set[str]:
    """The studio modules a file imports ("studio.models", "studio.providers.base", ...)."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    # A relative import is relative to the package: a package's own __init__ is in it.
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{alias.name}" for alias in node.names]
            for candidate in [target, *names]:
                if (ROOT / Path(*candidate.split("."))).with_suffix(".py").exists() or (
                    ROOT / Path(*candidate.split(".")) / "__init__.py"
                ).exists():
                    found.add(candidate)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("studio"))
    return {name for name in found if name.startswith("studio")} - {module}


def module_files():
    return [p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts]


def test_the_package_has_no_import_circle():
    graph = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): studio_imports(p)
        for p in module_files()
    }
    graph = {
        name: {t.removesuffix(".__init__") for t in targets if t in graph} for name, targets in graph.items()
    }

    def reaches(start, goal, seen):
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    circles = [name for name in graph if reaches(name, name, {name})]
    assert circles == []


def test_models_import_no_jobs_and_no_provider_module():
    imported = studio_imports(PACKAGE / "models.py")
    assert "studio.jobs" not in imported
    assert {name for name in imported if name.startswith("studio.providers")} == set()


HOSTED = [name for name in REGISTRY if name != "simulator"]


def hosted_names() -> list[str]:
    """Each hosted provider's name and the families of its fixed models ("veo", "pixverse")."""
    names = set(HOSTED)
    for provider in all_providers():
        if provider.name in HOSTED:
            names.update(re.match(r"[a-z]+", spec.key).group() for spec in provider.models())
    return sorted(names)


@pytest.mark.parametrize("vendor", hosted_names())
def test_no_module_template_script_or_style_outside_the_providers_names_a_hosted_provider(vendor):
    allowed = {PACKAGE / "settings.py"}
    places = [
        p for p in module_files() if "providers" not in p.relative_to(PACKAGE).parts and p not in allowed
    ]
    places += list((ROOT / "templates").rglob("*.html"))
    places += [p for p in (ROOT / "static").rglob("*") if p.suffix in (".js", ".css")]
    found = [str(p.relative_to(ROOT)) for p in places if re.search(vendor, p.read_text(), re.IGNORECASE)]
    assert found == []


def test_every_view_finds_the_creators_clip_asset_or_film_through_one_access_helper():
    source = (PACKAGE / "views.py").read_text()
    assert "get_object_or_404(Clip" not in source
    # Each once: in its helper.
    assert (
        source.count("get_object_or_404(Asset.objects") == source.count("get_object_or_404(ChainExport") == 1
    )
    assert [source.count(f"def {helper}(") for helper in ("_clip_for", "_asset_for", "_export_for")] == [
        1,
        1,
        1,
    ]


def test_the_registry_builds_each_provider_once():
    first, second = all_providers(), all_providers()
    assert [p.name for p in first] == list(REGISTRY)
    assert all(a is b for a, b in zip(first, second, strict=True))


@pytest.mark.django_db
def test_a_gallery_page_reads_a_published_model_list_once(signed_in, settings):
    """The registry is not rebuilt per lookup, and the cached list of a provider that
    publishes one is read once for the whole form."""
    publisher = next(p for p in all_providers() if p.publishes_models)
    setattr(settings, publisher.key_setting, "a-key-for-the-test")
    ProviderModelCache.objects.create(
        provider=publisher.name,
        data=[{"id": "acme/v1", "name": "Acme", "supported_durations": [4]}],
        fetched_at=timezone.now(),
        checked_at=timezone.now(),
    )
    assert publisher in enabled_providers() and catalogue.models_of(publisher)
    with CaptureQueriesContext(connection) as queries:
        assert signed_in.get("/").status_code == 200
    reads = [q["sql"] for q in queries if "providermodelcache" in q["sql"].lower()]
    assert len(reads) == 1
