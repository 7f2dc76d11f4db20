"""Middleware of the studio's own: what must happen before Django reads a request."""

from django.conf import settings
from django.http import HttpResponse


def refuse_oversized_bodies(get_response):
    """Answer 413 to a request whose declared body is larger than any the studio takes,
    before anything reads it: Django would otherwise parse the whole upload (to temporary
    files, past FILE_UPLOAD_MAX_MEMORY_SIZE) only for the form to refuse it afterwards.
    The limit is the largest video plus the largest image and room for the form's fields
    (a Generate without JavaScript may post both)."""

    def middleware(request):
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0  # Django reads an unreadable length as an empty body
        limit = settings.STUDIO_MAX_REQUEST_BYTES
        if declared > limit:
            megabytes = limit / (1024 * 1024)
            response = HttpResponse(
                f"That is too large to send: the studio takes at most {megabytes:.0f} MB in one "
                "request. Send one file at a time, within the limits beside each field.",
                status=413,
                content_type="text/plain; charset=utf-8",
            )
            # The body was not read: the connection cannot carry another request.
            response["Connection"] = "close"
            return response
        return get_response(request)

    return middleware
