"""What a card tells a creator about a clip that is not finished: its place in line, how
long it has been generating, about how long is left and what that estimate rests on, and
whether it can still be stopped.

The estimate comes from the studio's own recent clips of the same model (the median of the
last ten), so it reflects this studio's providers, queue and network; until one has
finished, the provider's typical time is given, and said to be that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.core.cache import cache
from django.db.models import Case, Count, F, Func, OuterRef, Q, Subquery, When
from django.utils import timezone

from .jobs import cannot_cancel_message
from .models import Clip, estimate_cache_key
from .providers import get_provider

# How long a model's typical generation time is kept between polls at most.
ESTIMATE_CACHE_SECONDS = 300


@dataclass
class Progress:
    # Queued: how many clips are sent before this one.
    ahead: int | None = None
    # Generating: seconds since the provider accepted it.
    elapsed: float | None = None
    # The expected time from acceptance to ready, and what it rests on.
    expected: float | None = None
    basis: str = ""
    # Whether "Cancel" is offered, and what the card says when it is not.
    can_cancel: bool = False
    cancel_note: str = ""

    @property
    def place_text(self) -> str:
        if self.ahead is None:
            return ""
        if self.ahead == 0:
            return "Next in line"
        return f"{self.ahead} clip{'s' if self.ahead != 1 else ''} ahead"

    @property
    def elapsed_text(self) -> str:
        return clock(self.elapsed) if self.elapsed is not None else ""

    @property
    def left_text(self) -> str:
        """ "about 1 min left"; past the estimate, that it is taking longer than usual."""
        if self.elapsed is None or self.expected is None:
            return ""
        left = self.expected - self.elapsed
        if left > 0:
            return f"about {spoken(left)} left"
        return f"taking longer than usual (usually about {spoken(self.expected)})"


def clock(seconds: float) -> str:
    """1:05, or 1:02:05 past an hour."""
    total = int(max(0, seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def spoken(seconds: float) -> str:
    """A duration as people say it when it is an estimate: "10 s", "1 min", "3 min"."""
    seconds = max(1.0, seconds)
    if seconds < 55:
        return f"{max(5, int(round(seconds / 5.0)) * 5)} s"
    if seconds < 90:
        return "1 min"
    minutes = int(round(seconds / 60.0))
    if minutes < 90:
        return f"{minutes} min"
    return f"{round(minutes / 60.0, 1):g} h"


@dataclass
class Lookups:
    """What several cards of one page share, read once per page (a gallery of 24 cards
    costs the same few queries as one card): providers, estimates by model, and the line
    of clips waiting to be sent."""

    providers: dict = field(default_factory=dict)
    typical: dict = field(default_factory=dict)
    # Queued clip pk -> how many clips are sent before it.
    ahead: dict = field(default_factory=dict)

    def provider(self, name: str):
        if name not in self.providers:
            try:
                self.providers[name] = get_provider(name)
            except LookupError:
                self.providers[name] = None
        return self.providers[name]

    def typical_seconds(self, clip: Clip):
        """Read once per page, and kept in the cache between pages: a generating card polls
        every 2 s, and the estimate only moves when a clip of its model finishes (jobs
        forgets it then; the time limit covers a clip finished some other way)."""
        key = (clip.provider, clip.model_key)
        if key not in self.typical:
            cache_key = estimate_cache_key(*key)
            kept = cache.get(cache_key)
            if kept is None:
                kept = {"typical": Clip.objects.typical_generation_seconds(*key)}
                cache.set(cache_key, kept, ESTIMATE_CACHE_SECONDS)
            self.typical[key] = kept["typical"]
        return self.typical[key]

    def ahead_of(self, clip: Clip) -> int:
        """A count, not the list of every waiting id: a burst of generations makes that
        list long. The card's own query may bring it (`ahead_in_line`, see with_place)."""
        if clip.pk not in self.ahead:
            known = getattr(clip, "ahead_in_line", None)
            self.ahead[clip.pk] = known if known is not None else waiting().filter(pk__lt=clip.pk).count()
        return self.ahead[clip.pk]

    @classmethod
    def of(cls, request) -> Lookups:
        """The lookups of this request's cards (the card tag finds them on the request)."""
        lookups = getattr(request, "_studio_progress_lookups", None)
        if lookups is None:
            lookups = request._studio_progress_lookups = cls()
        return lookups

    def count_ahead(self, clips) -> None:
        """The place in line of every queued clip of a page, in one query."""
        pks = [c.pk for c in clips if c.status == Clip.Status.QUEUED and c.pk not in self.ahead]
        if not pks:
            return
        counts = waiting().aggregate(**{f"c{pk}": Count("pk", filter=Q(pk__lt=pk)) for pk in pks})
        self.ahead.update({pk: counts[f"c{pk}"] for pk in pks})


def waiting():
    return Clip.objects.filter(status__in=(Clip.Status.QUEUED, Clip.Status.SUBMITTING))


def with_place(queryset):
    """`queryset` with each queued clip's place in line read in the same query."""
    # COUNT as a plain function: no GROUP BY, one row whatever matches.
    ahead = waiting().filter(pk__lt=OuterRef("pk")).order_by()
    ahead = ahead.annotate(n=Func(F("pk"), function="COUNT")).values("n")
    return queryset.annotate(
        ahead_in_line=Case(When(status=Clip.Status.QUEUED, then=Subquery(ahead)), default=None)
    )


def estimate(clip: Clip, provider=None, lookups: Lookups | None = None) -> tuple[float | None, str]:
    """(seconds from acceptance to ready, what that rests on) for this clip's model."""
    typical = (lookups or Lookups()).typical_seconds(clip)
    if typical is not None:
        seconds, count = typical
        if count == 1:
            return seconds, "from the last clip of this model made here"
        return seconds, f"the middle of the last {count} clips of this model made here"
    if provider is None:
        return None, ""
    return (
        float(provider.typical_seconds),
        f"{short_name(provider)}'s typical time, as no clip of this model has finished here yet",
    )


def short_name(provider) -> str:
    return provider.vendor or provider.label


def progress(clip: Clip, now=None, lookups: Lookups | None = None) -> Progress:
    """Everything the card of an unfinished clip says; an empty Progress for a finished one."""
    found = Progress()
    if clip.is_finished:
        return found
    now = now or timezone.now()
    lookups = lookups or Lookups()
    provider = lookups.provider(clip.provider)
    label = short_name(provider) if provider is not None else clip.provider
    if clip.status == Clip.Status.QUEUED:
        found.ahead = lookups.ahead_of(clip)
        found.can_cancel = True
        return found
    if clip.status == Clip.Status.SUBMITTING:
        found.ahead = 0
        found.cancel_note = f"Being sent to {label} now."
        return found
    started = clip.submitted_at or clip.created_at
    found.elapsed = max(0.0, (now - started).total_seconds())
    found.expected, found.basis = estimate(clip, provider, lookups)
    if clip.status == Clip.Status.RUNNING and provider is not None and provider.can_cancel:
        found.can_cancel = True
    elif clip.status == Clip.Status.RUNNING:
        found.cancel_note = cannot_cancel_message(label)
    return found
