"""The ``pillarbox.django`` app: add it to ``INSTALLED_APPS``."""

from __future__ import annotations

from django.apps import AppConfig


class PillarboxConfig(AppConfig):
    name = "pillarbox.django"
    # "django" would be this module's default label: confusing everywhere.
    label = "pillarbox"
    verbose_name = "Pillarbox"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from django.utils.module_loading import autodiscover_modules

        from . import checks, conf

        del checks  # imported for its @register
        # As Celery's autodiscover_tasks: each installed app's tasks module
        # registers its tasks, so the worker knows them all.
        if conf.option("AUTODISCOVER") is True:
            autodiscover_modules("tasks")
