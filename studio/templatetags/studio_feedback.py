"""Template tags for what a card says about a clip that is not finished (studio.progress)."""

from django import template

from .. import progress

register = template.Library()


@register.simple_tag(takes_context=True)
def clip_progress(context, clip):
    """{% clip_progress clip as p %}: the clip's place in line, times and cancel rules. The
    lookups the cards of one page share are kept on the request, so a gallery page reads
    each of them once, however many cards it has."""
    holder = context.get("request") or context
    lookups = getattr(holder, "_studio_progress_lookups", None)
    if lookups is None:
        lookups = progress.Lookups()
        try:
            holder._studio_progress_lookups = lookups
        except AttributeError:
            pass  # a context without a request: this card alone
    return progress.progress(clip, lookups=lookups)
