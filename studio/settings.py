"""Every setting of the studio, read from the environment (see README and .env.example).

Defaults make `make run` work on a fresh machine with nothing configured: SQLite beside the
project, the embedded ORM queue, the offline simulator, media under ./media.
"""

import base64
import hashlib
import os
import secrets
import sys
import warnings
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv

BASE_DIR = Path(__file__).resolve().parent.parent


TRUE_WORDS = {"1", "true", "yes"}
FALSE_WORDS = {"0", "false", "no"}


def env_bool(name, default=False):
    """true/false, 1/0 or yes/no (any case); anything else stops start-up, naming the
    variable, rather than silently meaning "off"."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(
        f"{name} must be true or false (also accepted: 1/0, yes/no); it is {os.environ[name]!r}."
    )


# A git-ignored .env beside manage.py (or the file STUDIO_DOTENV names) may hold the
# settings (provider keys...). It is read with python-dotenv, so comments, quotes and
# `export` behave as people expect; the real environment always wins. Never under pytest:
# a developer's real keys must not reach the tests (they would talk to the real services).
if not env_bool("STUDIO_IGNORE_DOTENV") and "pytest" not in sys.modules:
    load_dotenv(os.environ.get("STUDIO_DOTENV") or BASE_DIR / ".env", override=False)


def env_float(name, default):
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number; it is {os.environ[name]!r}.") from None


def env_list(name, default=""):
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def _secret_key():
    """SECRET_KEY from the environment; otherwise one generated once and kept in a
    git-ignored file, so sessions survive restarts without anyone choosing a key."""
    key = os.environ.get("SECRET_KEY")
    if key:
        return key
    path = BASE_DIR / ".secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        key = secrets.token_urlsafe(50)
        path.write_text(key)
        path.chmod(0o600)
        return key


SECRET_KEY = _secret_key()


def _encryption_key():
    """STUDIO_ENCRYPTION_KEY: the Fernet key (32 bytes, URL-safe base64) that encrypts the
    provider keys pasted on the Providers page (studio.keys). Empty: one derived from
    SECRET_KEY, so a fresh install needs nothing, but then changing SECRET_KEY makes the
    saved keys unreadable (they must be pasted again). A malformed value stops start-up
    here rather than at the first paste."""
    value = os.environ.get("STUDIO_ENCRYPTION_KEY", "").strip()
    if not value:
        return ""
    try:
        raw = base64.urlsafe_b64decode(value.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raw = b""
    if len(raw) != 32:
        raise ImproperlyConfigured(
            "STUDIO_ENCRYPTION_KEY must be a Fernet key: 32 bytes in URL-safe base64 (44 characters). "
            'Make one with: python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
        )
    return value


STUDIO_ENCRYPTION_KEY = _encryption_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "django_q",
    # Sign-in attempts, counted per account and per address (AXES_* below).
    "axes",
    # The Content-Security-Policy header (CONTENT_SECURITY_POLICY below).
    "csp",
    "studio",
]

MIDDLEWARE = [
    # First: a body too large for anything the studio takes is refused before it is read.
    "studio.middleware.refuse_oversized_bodies",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as its docs ask: it turns a locked-out sign-in into the page that says so.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "studio.urls"
WSGI_APPLICATION = "studio.wsgi.application"
ASGI_APPLICATION = "studio.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# SQLite by default. IMMEDIATE transactions and a 20 s busy timeout stop "database is
# locked" between the web process and the worker (measured: NOTES.md); WAL lets readers
# go on while a writer commits.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=0 if not os.environ.get("DATABASE_URL") else 60,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# A cache every web process and worker of the studio shares: Redis when REDIS_URL is set,
# else files on this machine (STUDIO_CACHE_DIR). It holds sessions (below) and short-lived
# figures such as a model's typical generation time. The prefix keeps two studios (or a
# studio and its tests) on one machine apart.
STUDIO_CACHE_DIR = Path(os.environ.get("STUDIO_CACHE_DIR") or BASE_DIR / ".cache")
_cache_prefix = hashlib.blake2s(str(DATABASES["default"].get("NAME")).encode(), digest_size=6).hexdigest()
if os.environ.get("REDIS_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["REDIS_URL"],
            "KEY_PREFIX": _cache_prefix,
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(STUDIO_CACHE_DIR),
            "KEY_PREFIX": _cache_prefix,
            "OPTIONS": {"MAX_ENTRIES": 10_000},
        }
    }
# Sessions are read from that cache, and written to it and to the database: a card poll
# (every 2 s per generating card) then costs no session query. Only where the cache is
# shared by every web process: Redis, or one machine's files with SQLite. PostgreSQL may
# serve web processes on several machines, each with its own files, where a sign-out on
# one would not reach the others' copies: there sessions stay in the database alone.
if os.environ.get("REDIS_URL") or DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Axes first: it refuses a locked-out sign-in before any password is checked. AxesBackend
# is also a ModelBackend, so the test client's force_login (which logs in with the first
# backend that can load a user) and sessions made with it keep working.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Sign-in rate limit (django-axes): after STUDIO_SIGNIN_FAILURES wrong passwords for one
# account (from anywhere), or from one address (for any account), sign-in is refused
# there for STUDIO_SIGNIN_LOCKOUT_MINUTES, then opens again by itself. A right password
# clears the count. The address is REMOTE_ADDR: behind a reverse proxy every creator
# shares the proxy's address, so its limit counts them together.
AXES_FAILURE_LIMIT = max(1, int(env_float("STUDIO_SIGNIN_FAILURES", 5)))
AXES_COOLOFF_TIME = timedelta(minutes=env_float("STUDIO_SIGNIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "studio.views.sign_in_locked"
# Only failures are kept (a row per account or address): a successful sign-in writes nothing.
AXES_DISABLE_ACCESS_LOG = True
AXES_VERBOSE = False
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
# Serve straight from the app folders, so `make run` needs no collectstatic step (and
# whitenoise need not warn that STATIC_ROOT is missing until someone collects).
WHITENOISE_USE_FINDERS = True
warnings.filterwarnings("ignore", message="No directory at", module="whitenoise.base")

# Media (videos, thumbnails, frames, uploads) is never served as a public folder: the
# studio's own views check who is asking. MEDIA_URL is only a prefix for those views.
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT") or BASE_DIR / "media")
MEDIA_URL = "/media/"

# Where media is kept: MEDIA_ROOT on this machine by default; an S3-compatible bucket (AWS
# S3, MinIO, Cloudflare R2, ...) when AWS_STORAGE_BUCKET_NAME is set. The bucket stays
# private: the studio's views check who is asking, then redirect to a presigned URL that
# expires after AWS_QUERYSTRING_EXPIRE seconds. The keys (AWS_ACCESS_KEY_ID and
# AWS_SECRET_ACCESS_KEY) are read from the environment by boto3, never put in settings.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Static files as before: Django's own storage, served by whitenoise.
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
AWS_STORAGE_BUCKET_NAME = os.environ.get("AWS_STORAGE_BUCKET_NAME", "").strip()
if AWS_STORAGE_BUCKET_NAME:
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            # For S3-compatible services (MinIO, R2, ...); empty: AWS itself.
            "endpoint_url": os.environ.get("AWS_S3_ENDPOINT_URL", "").strip() or None,
            "region_name": os.environ.get("AWS_S3_REGION_NAME", "").strip() or None,
            "custom_domain": os.environ.get("AWS_S3_CUSTOM_DOMAIN", "").strip() or None,
            "location": os.environ.get("AWS_LOCATION", "").strip().strip("/"),
            # "path" for services that want the bucket in the path (often MinIO); empty: auto.
            "addressing_style": os.environ.get("AWS_S3_ADDRESSING_STYLE", "").strip() or None,
            "signature_version": "s3v4",
            "default_acl": "private",
            "file_overwrite": False,
            "querystring_auth": True,
            "querystring_expire": int(env_float("AWS_QUERYSTRING_EXPIRE", 600)),
        },
    }

FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
# Largest image a creator may upload, in bytes and in pixels.
STUDIO_MAX_IMAGE_BYTES = int(env_float("STUDIO_MAX_IMAGE_MB", 20) * 1024 * 1024)
STUDIO_MAX_IMAGE_PIXELS = int(env_float("STUDIO_MAX_IMAGE_MEGAPIXELS", 40) * 1_000_000)
# Largest video a creator may bring to extend: bytes, seconds, pixels on the long side and
# frames per second, checked from the container's header before anything is decoded.
STUDIO_MAX_VIDEO_BYTES = int(env_float("STUDIO_MAX_VIDEO_MB", 200) * 1024 * 1024)
STUDIO_MAX_VIDEO_SECONDS = env_float("STUDIO_MAX_VIDEO_SECONDS", 120)
STUDIO_MAX_VIDEO_SIDE = int(env_float("STUDIO_MAX_VIDEO_SIDE", 3840))
STUDIO_MAX_VIDEO_FPS = env_float("STUDIO_MAX_VIDEO_FPS", 60)
# The largest request body taken at all (studio.middleware): one video and one image with
# the form's fields. A larger declared body is refused (413) before Django reads it.
STUDIO_MAX_REQUEST_BYTES = STUDIO_MAX_VIDEO_BYTES + STUDIO_MAX_IMAGE_BYTES + 1024 * 1024
# Storage a creator may fill (clips, uploads, joined films), in MB; empty: no limit. Past it
# new uploads and generations are refused with a message saying what is used.
STUDIO_USER_QUOTA_MB = env_float("STUDIO_USER_QUOTA_MB", None)
STUDIO_USER_QUOTA_BYTES = int(STUDIO_USER_QUOTA_MB * 1024 * 1024) if STUDIO_USER_QUOTA_MB else None
# Pasted links to loopback or private addresses are refused (SSRF); allow them only for
# local testing.
STUDIO_ALLOW_PRIVATE_URLS = env_bool("STUDIO_ALLOW_PRIVATE_URLS", False)

# --- Jobs -----------------------------------------------------------------------------
# How long a provider may take to make a clip, counted from the moment it accepted the job
# (time in our queue and retries before that do not count). Past it the clip is polled
# once more, then shown as timed out; each provider may have its own (below). Also how
# long the studio keeps trying to send a clip that providers keep refusing for now (429).
CLIP_DEADLINE_MINUTES = env_float("CLIP_DEADLINE_MINUTES", 30)
# After a time-out (or a copy that kept failing) the studio keeps looking for the clip this
# many hours, every few minutes and whenever the provider calls back: a late delivery
# still becomes Ready.
CLIP_LATE_DELIVERY_HOURS = env_float("CLIP_LATE_DELIVERY_HOURS", 24)
# How long one poll sweep keeps looping over due clips before it hands the worker back.
# The django-q2 scheduler only wakes every ~30 s, so a sweep must outlast that gap.
POLL_SWEEP_SECONDS = env_float("POLL_SWEEP_SECONDS", 90)
# How many polls of different clips one sweep has in flight at once (threads; each waits
# on the network, not the CPU).
POLL_CONCURRENCY = max(1, int(env_float("POLL_CONCURRENCY", 32)))

# --- Providers --------------------------------------------------------------------------
SIMULATOR_ENABLED = env_bool("SIMULATOR_ENABLED", True)
# Seconds the simulated service takes to accept a job and, again, to finish rendering it,
# so a creator sees the card go "Queued" then "Generating" as with a hosted model.
SIMULATOR_DELAY_SECONDS = env_float("SIMULATOR_DELAY_SECONDS", 2)
# Lines of picture the simulator renders (the width follows the aspect ratio). 480 keeps
# encoding around a second per clip; the test suite renders 144 to spend less of its CPU.
SIMULATOR_HEIGHT = int(env_float("SIMULATOR_HEIGHT", 480))
if not (144 <= SIMULATOR_HEIGHT <= 1080 and SIMULATOR_HEIGHT % 2 == 0):
    raise ImproperlyConfigured(
        f"SIMULATOR_HEIGHT must be an even number of lines from 144 to 1080; it is {SIMULATOR_HEIGHT}."
    )

# Pictory AI Studio (Veo 3.1, Veo 3.1 Fast, PixVerse 5.5): on when the key is set.
PICTORY_API_KEY = os.environ.get("PICTORY_API_KEY", "").strip()
# Overridable so a proxy or a test's fake server can stand in for the real service.
PICTORY_API_BASE_URL = (
    os.environ.get("PICTORY_API_BASE_URL", "").strip() or "https://api.pictory.ai/pictoryapis"
).rstrip("/")
# Seconds between two polls of one job; the provider keeps it within 10 to 30 (its docs).
PICTORY_POLL_SECONDS = env_float("PICTORY_POLL_SECONDS", 15)
# Longest wait for one HTTP exchange with Pictory (connect: at most 10 s of it).
PICTORY_TIMEOUT_SECONDS = env_float("PICTORY_TIMEOUT_SECONDS", 30)
# Minutes Pictory may take per clip from acceptance (empty: CLIP_DEADLINE_MINUTES).
PICTORY_DEADLINE_MINUTES = env_float("PICTORY_DEADLINE_MINUTES", None)
# Pictory sits behind bot protection that refuses library User-Agents (403, Cloudflare error
# 1010; its own helper script sends a browser's). Empty: a browser-like default.
PICTORY_USER_AGENT = os.environ.get("PICTORY_USER_AGENT", "").strip()

# OpenRouter video (models read from its /videos/models list): on when the key is set.
OPENROUTER_API_KEY = os.environ.get("OPENROUTER_API_KEY", "").strip()
OPENROUTER_API_BASE_URL = (
    os.environ.get("OPENROUTER_API_BASE_URL", "").strip() or "https://openrouter.ai/api/v1"
).rstrip("/")
# Seconds between two polls of one job (its docs: about 30, never faster than 10). Kept
# within 10 to 120; lower only against a test server on this machine.
OPENROUTER_POLL_SECONDS = env_float("OPENROUTER_POLL_SECONDS", 30)
# Longest wait for one HTTP exchange with OpenRouter (connect: at most 10 s of it).
OPENROUTER_TIMEOUT_SECONDS = env_float("OPENROUTER_TIMEOUT_SECONDS", 30)
# Minutes OpenRouter may take per clip from acceptance (empty: CLIP_DEADLINE_MINUTES).
OPENROUTER_DEADLINE_MINUTES = env_float("OPENROUTER_DEADLINE_MINUTES", None)
# The signing secret of OpenRouter's webhooks; when set, unsigned or stale calls are refused.
OPENROUTER_WEBHOOK_SECRET = os.environ.get("OPENROUTER_WEBHOOK_SECRET", "").strip()
# How old the cached model list may get before the worker reads it again.
OPENROUTER_MODELS_REFRESH_MINUTES = env_float("OPENROUTER_MODELS_REFRESH_MINUTES", 60)

# The address at which providers can fetch files the studio publishes (first frames,
# uploads) and call webhooks, e.g. https://studio.example.com. Empty: nothing is published.
PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "").rstrip("/")

# --- Queue (django-q2) --------------------------------------------------------------------
# `timeout` must outlast the longest task (a poll sweep, a large download) and `retry` must
# be larger than `timeout`, or a running task is handed out again (NOTES.md).
Q_CLUSTER = {
    "name": "studio",
    "workers": int(env_float("Q_WORKERS", 2)),
    "timeout": 600,
    "retry": 720,
    "max_attempts": 1,
    "catch_up": False,
    "save_limit": 500,
    "ack_failures": True,
    "label": "Background jobs",
    "orm": "default",
    "poll": 0.2,
}
if os.environ.get("REDIS_URL"):
    Q_CLUSTER.pop("orm")
    Q_CLUSTER["redis"] = os.environ["REDIS_URL"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    # Provider text in a log line never carries a key it echoed (studio.providers.redact).
    "filters": {
        "redact": {"()": "studio.providers.redact.RedactingFilter"},
        # The token in /hooks/<provider>/<token>/ is a provider's only credential: never in
        # a log line. The access logs (runserver's, gunicorn's) have handlers of their own:
        # StudioConfig.ready puts the same filter on their loggers.
        "hook_tokens": {"()": "studio.logs.MaskHookTokens"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact", "hook_tokens"],
        }
    },
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        # Axes says INFO at every sign-in; a lockout is a WARNING and still shows.
        "axes": {"level": "WARNING"},
    },
}

SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool(
    "SECURE_COOKIES", PUBLIC_BASE_URL.startswith("https://")
)
# Served over https (PUBLIC_BASE_URL says so): browsers are told to come back only over https
# (HSTS) for STUDIO_HSTS_SECONDS. Django sends it on secure requests: behind a proxy that ends
# TLS, set BEHIND_HTTPS_PROXY=true so X-Forwarded-Proto tells Django the request was https
# (only then: a client could send that header itself).
SECURE_HSTS_SECONDS = (
    int(env_float("STUDIO_HSTS_SECONDS", 365 * 24 * 3600)) if PUBLIC_BASE_URL.startswith("https://") else 0
)
if env_bool("BEHIND_HTTPS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Content-Security-Policy (django-csp): scripts only from the studio's own static files, no
# inline script, no eval (htmx runs with allowEval off). Inline styles stay allowed: cards
# set their aspect ratio in a style attribute and htmx adds its indicator style. Media may
# come from a bucket (a presigned redirect) when one is configured.
_media_sources = ["'self'", "blob:", "data:"]
if AWS_STORAGE_BUCKET_NAME:
    _media_sources.append("https:")
    _endpoint = os.environ.get("AWS_S3_ENDPOINT_URL", "").strip()
    if _endpoint.startswith("http://"):
        _media_sources.append(_endpoint.rstrip("/"))
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": _media_sources,
        "media-src": _media_sources,
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
