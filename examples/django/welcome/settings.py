"""A sign-up page that sends a welcome email through Pillarbox.

Run ``python manage.py runserver`` and ``python manage.py pillarbox_worker``
side by side (see README.md). With PILLARBOX_URL unset, the queue is
``pillarbox.sqlite3`` beside this file: nothing else to install or run.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("SECRET_KEY", "example-only-not-secret")
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
USE_TZ = True
ROOT_URLCONF = "welcome.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "pillarbox.django",
    "accounts",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
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
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
STATIC_URL = "static/"

# The worker prints the emails here instead of sending them.
EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"

# Unset: sqlite://<BASE_DIR>/pillarbox.sqlite3. Try redis://localhost:6379.
PILLARBOX_URL = os.environ.get("PILLARBOX_URL")
PILLARBOX = {
    "MAX_RETRIES": 3,    # then the message is a dead letter, shown in the admin
    "RETRY_DELAY": 2.0,  # 2 s, 4 s, 8 s between attempts
    "CONCURRENCY": 4,
}
# Django's own Tasks framework goes through Pillarbox too (Django 6).
TASKS = {"default": {"BACKEND": "pillarbox.django.PillarboxBackend"}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"pillarbox": {"handlers": ["console"], "level": "INFO"}},
}
