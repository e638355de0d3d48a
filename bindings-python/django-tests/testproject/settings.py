"""The test project: its broker and database come from the environment so
that the suite runs once per backend and the worker subprocess shares them.

PILLARBOX_TEST_URL     the broker (default: sqlite beside the database)
PILLARBOX_TEST_DB      the Django database file (test and worker share it)
PILLARBOX_TEST_PREFIX  prefixes topics, so runs on a shared Redis stay apart
"""

import os
from pathlib import Path

BASE_DIR = Path(os.environ.get("PILLARBOX_TEST_DIR", Path(__file__).resolve().parent.parent / ".run"))
BASE_DIR.mkdir(parents=True, exist_ok=True)
DB = os.environ.get("PILLARBOX_TEST_DB", str(BASE_DIR / "db.sqlite3"))
PREFIX = os.environ.get("PILLARBOX_TEST_PREFIX", "t-")

SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "testproject.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "pillarbox.django",
    "testproject.shop",
]
try:  # Django 5.2: the Tasks framework is the backport
    import django.tasks  # noqa: F401
except ImportError:
    INSTALLED_APPS.insert(0, "django_tasks")

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DB,
        # The tests and the worker subprocess use one file.
        "TEST": {"NAME": DB},
        "OPTIONS": {"timeout": 20},
    }
}
STATIC_URL = "/static/"

PILLARBOX_URL = os.environ.get("PILLARBOX_TEST_URL") or f"sqlite://{BASE_DIR / 'queue.sqlite3'}"
PILLARBOX = {
    "TOPIC": f"{PREFIX}tasks",
    "MAX_RETRIES": 2,
    "RETRY_DELAY": 0.1,
    "RETRY_MAX_DELAY": 0.5,
    "CONCURRENCY": 2,
    "SHUTDOWN_GRACE": 5,
}
TASKS = {
    "default": {
        "BACKEND": "pillarbox.django.PillarboxBackend",
        "QUEUES": ["default", "emails"],
        "OPTIONS": {"topic_prefix": PREFIX, "result_retention": 3600},
    }
}

# The worker's lines carry a marker, to show they go through LOGGING.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"marked": {"format": "[testproject] %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "marked"}},
    "loggers": {"pillarbox": {"handlers": ["console"], "level": "INFO"}},
}
