"""Found by pillarbox.django's autodiscovery, as Celery users expect."""

import os
import random
import smtplib

from django.core.mail import send_mail
from django.utils import timezone

import pillarbox.django

from .models import Signup

# How often the pretend SMTP server is down: high, so that the admin shows
# retries and, now and then, a dead letter.
FAILURE_RATE = float(os.environ.get("WELCOME_FAILURE_RATE", "0.5"))


@pillarbox.django.task(idempotency_key=lambda signup_id: f"welcome-{signup_id}")
def send_welcome(signup_id: int) -> None:
    """One welcome email per sign-up, however often the message is delivered."""
    signup = Signup.objects.get(id=signup_id)
    if random.random() < FAILURE_RATE:
        raise smtplib.SMTPServerDisconnected("the SMTP server went away (pretend)")
    send_mail(
        "Welcome!",
        f"Hello {signup.email}, thanks for signing up.",
        "hello@example.com",
        [signup.email],
    )
    Signup.objects.filter(id=signup_id).update(welcomed=timezone.now())


try:  # Django 6: its own Tasks framework, through PillarboxBackend
    from django.tasks import task
except ImportError:
    try:  # Django 5.2: the django-tasks backport
        from django_tasks import task
    except ImportError:  # neither: skip this one
        task = None

if task is not None:

    @task
    def count_signups() -> int:
        """A Django Task: its result is stored, see Pillarbox › Task results."""
        return Signup.objects.count()

else:
    count_signups = None
