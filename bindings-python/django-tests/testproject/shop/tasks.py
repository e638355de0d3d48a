"""Tasks of the test app, found by autodiscovery: both kinds."""

import asyncio

import pillarbox.django
from django.conf import settings

try:
    from django.tasks import task
except ImportError:
    from django_tasks import task

from .models import Event


# --- the Celery-style layer ------------------------------------------------------
@pillarbox.django.task
def record(name: str, value: str = "") -> None:
    Event.objects.create(name=name, value=value)


@pillarbox.django.task(topic=f"{settings.PILLARBOX['TOPIC']}-flaky", max_retries=1)
def always_fails(name: str) -> None:
    Event.objects.create(name=name, value="attempt")
    raise RuntimeError(f"{name} cannot succeed")


@pillarbox.django.task
def slow(name: str, seconds: float) -> None:
    Event.objects.create(name=name, value="started")
    import time

    time.sleep(seconds)
    Event.objects.create(name=name, value="finished")


# --- Django's Tasks framework ----------------------------------------------------
@task
def add(a: int, b: int) -> int:
    Event.objects.create(name="add", value=str(a + b))
    return a + b


@task(queue_name="emails", takes_context=True)
def flaky_email(context, to: str, failures: int) -> str:
    """Fails ``failures`` times, then succeeds."""
    Event.objects.create(name=f"email-{to}", value=str(context.attempt))
    if context.attempt <= failures:
        raise ConnectionError(f"SMTP down (attempt {context.attempt})")
    return f"sent to {to}"


@task
async def async_double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x
