"""Settings for Annovox.

Everything that differs between the embedded default and a deployment comes from environment variables:

- ``ANNOVOX_DATA_DIR``: stored files and the SQLite database of the embedded default (default ``./data``).
- ``DATABASE_URL``: e.g. ``postgres://user@host:5432/annovox``; SQLite under the data folder when unset.
- ``REDIS_URL``: e.g. ``redis://127.0.0.1:6379/0``; the channel layer is in-memory when unset.
- ``ANNOVOX_SECRET_KEY``, ``ANNOVOX_DEBUG``, ``ANNOVOX_ALLOWED_HOSTS``, ``ANNOVOX_CORS_ORIGINS``,
  ``ANNOVOX_MAX_UPLOAD_MB`` (largest single DICOM file accepted, default 2048).
- Interactive service: ``ANNOVOX_INPROCESS_WORKER`` (1/0: run an inference worker inside the web server; on by
  default without ``REDIS_URL``), ``ANNOVOX_INPROCESS_DEVICE`` (cpu), ``ANNOVOX_INPROCESS_MAX_SESSIONS`` (8),
  ``ANNOVOX_HEARTBEAT_S`` (1), ``ANNOVOX_WORKER_TIMEOUT_S`` (5: a worker silent for longer is taken for dead),
  ``ANNOVOX_SESSION_IDLE_S`` (1800: idle sessions leave the worker's memory), ``ANNOVOX_WS_RATE`` and
  ``ANNOVOX_WS_BURST`` (messages a second per connection, 20 and 40), ``ANNOVOX_WS_MAX_PENDING`` (8 requests
  awaiting results per connection).
- ``ANNOVOX_PUBLIC_URL``: e.g. ``https://annovox.example.org``, the base of URLs in DICOMweb responses
  (RetrieveURL, BulkDataURI); unset, they follow each request's Host header.
"""

import os
import secrets
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("ANNOVOX_DATA_DIR", BASE_DIR / "data")).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """A key from the environment, or one generated once and kept in the data folder."""
    if key := os.environ.get("ANNOVOX_SECRET_KEY"):
        return key
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


def _env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


SECRET_KEY = _secret_key()
DEBUG = os.environ.get("ANNOVOX_DEBUG", "0") == "1"
ALLOWED_HOSTS = _env_list("ANNOVOX_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "drf_spectacular",
    "channels",
    "webapp.accounts",
    "webapp.studies",
    "webapp.segmentations",
    "webapp.interactive",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "servestatic.middleware.ServeStaticMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # After the session middleware: a valid bearer token replaces the anonymous user.
    "webapp.accounts.middleware.BearerTokenMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "webapp.urls"
ASGI_APPLICATION = "webapp.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "webapp" / "templates"],
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

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{DATA_DIR / 'annovox.sqlite3'}",
        conn_max_age=int(os.environ.get("ANNOVOX_DB_CONN_MAX_AGE", "60")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several threads (Daphne, imports) write at once: wait for the lock instead of failing.
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE"}

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 reads with a 5 s socket timeout by default, as long as the layer's blocking pop
            # waits: every idle receive failed. Above that wait, a dead Redis is still noticed.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 15}]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

ANNOVOX_INPROCESS_WORKER = os.environ.get("ANNOVOX_INPROCESS_WORKER", "0" if REDIS_URL else "1") == "1"
ANNOVOX_INPROCESS_DEVICE = os.environ.get("ANNOVOX_INPROCESS_DEVICE", "cpu")
ANNOVOX_INPROCESS_MAX_SESSIONS = int(os.environ.get("ANNOVOX_INPROCESS_MAX_SESSIONS", "8"))
ANNOVOX_HEARTBEAT_S = float(os.environ.get("ANNOVOX_HEARTBEAT_S", "1"))
ANNOVOX_WORKER_TIMEOUT_S = float(os.environ.get("ANNOVOX_WORKER_TIMEOUT_S", "5"))
ANNOVOX_SESSION_IDLE_S = float(os.environ.get("ANNOVOX_SESSION_IDLE_S", "1800"))
ANNOVOX_WS_RATE = float(os.environ.get("ANNOVOX_WS_RATE", "20"))
ANNOVOX_WS_BURST = float(os.environ.get("ANNOVOX_WS_BURST", "40"))
ANNOVOX_WS_MAX_PENDING = int(os.environ.get("ANNOVOX_WS_MAX_PENDING", "8"))

STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(DATA_DIR / "files")},
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"  # filled by collectstatic in deployments
STATIC_ROOT.mkdir(exist_ok=True)
# The built frontend (Vite writes into frontend/dist).
STATICFILES_DIRS = [p for p in [BASE_DIR / "frontend" / "dist"] if p.exists()]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "webapp.accounts.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "webapp.studies.access.CanViewStudies",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {"TITLE": "Annovox API", "VERSION": "0.1.0"}

ANNOVOX_PUBLIC_URL = os.environ.get("ANNOVOX_PUBLIC_URL", "").rstrip("/")

CORS_ALLOWED_ORIGINS = _env_list("ANNOVOX_CORS_ORIGINS", "")
CORS_ALLOW_HEADERS = ["accept", "authorization", "content-type", "x-csrftoken"]
# The working labelmap's headers (GET /api/segmentations/{id}/draft/, docs/segmentations.md).
CORS_EXPOSE_HEADERS = ["content-type", "content-length", "x-annovox-base-version", "x-annovox-draft-segments"]

# Import limits: a single file (or zip entry) larger than this is rejected. A zip archive as a whole may
# expand to one maximal file or ANNOVOX_MAX_ZIP_RATIO times its own size, whichever is larger (zip bombs);
# single real DICOM files do compress further than that (a sparse SEG reaches about 400:1).
ANNOVOX_MAX_FILE_BYTES = int(os.environ.get("ANNOVOX_MAX_UPLOAD_MB", "2048")) * 1024 * 1024
ANNOVOX_MAX_ZIP_RATIO = 200
DATA_UPLOAD_MAX_MEMORY_SIZE = None
FILE_UPLOAD_MAX_MEMORY_SIZE = 16 * 1024 * 1024

# Built volumes kept in memory (series → volume), in bytes.
ANNOVOX_VOLUME_CACHE_BYTES = int(os.environ.get("ANNOVOX_VOLUME_CACHE_MB", "2048")) * 1024 * 1024

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("ANNOVOX_LOG_LEVEL", "INFO")},
    "loggers": {
        "django.server": {"level": "WARNING"},
        # highdicom narrates every attribute it copies at INFO: one line per source image and module.
        "highdicom": {"level": "WARNING"},
    },
}

# Daphne does not serve files: ServeStatic (async, so requests stay off the thread pool) serves the built
# frontend straight from its folder.
SERVESTATIC_USE_FINDERS = True
