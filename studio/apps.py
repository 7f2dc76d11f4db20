import logging

from django.apps import AppConfig

# The loggers that write a line per request with its path, each with handlers of its own
# (Django's for runserver, gunicorn's for --access-logfile).
ACCESS_LOGGERS = ("django.server", "gunicorn.access")


class StudioConfig(AppConfig):
    name = "studio"
    verbose_name = "Lastframe Studio"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from .logs import MaskHookTokens

        # A filter on the logger itself, so its own handlers stay as they are configured.
        for name in ACCESS_LOGGERS:
            logger = logging.getLogger(name)
            if not any(isinstance(f, MaskHookTokens) for f in logger.filters):
                logger.addFilter(MaskHookTokens())
