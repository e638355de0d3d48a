"""``python manage.py pillarbox_worker [--topics a,b] [--concurrency N]``:
runs the project's tasks (``@pillarbox.django.task`` and Django Tasks sent
through ``PillarboxBackend``) until SIGTERM or Ctrl-C, then stops
gracefully: no new messages, running tasks get ``SHUTDOWN_GRACE`` to finish."""

from __future__ import annotations

import logging
from typing import Any, Dict

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ....tasks import run_until_stopped
from ...project import get_app

log = logging.getLogger("pillarbox.django")


class Command(BaseCommand):
    help = "Runs the project's Pillarbox tasks until SIGTERM or Ctrl-C."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--topics",
            action="append",
            help="topics to run, comma-separated or repeated (default: every topic of the project's tasks)",
        )
        parser.add_argument(
            "--concurrency", "-c", type=int, help="tasks running at once per topic (default: PILLARBOX['CONCURRENCY'])"
        )
        parser.add_argument(
            "--no-scheduler", action="store_true", help="do not publish the ticks of the broker's schedules"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        _default_logging()
        app = get_app()
        topics = [t for spec in options["topics"] or [] for t in spec.split(",") if t] or None
        worker_options: Dict[str, Any] = {}
        if options["concurrency"] is not None:
            if options["concurrency"] < 1:
                raise CommandError("--concurrency must be at least 1")
            worker_options["concurrency"] = options["concurrency"]
        for name, done in app.sync_schedules().items():
            log.info("schedule %s: %s (PILLARBOX['SCHEDULES'])", name, done)
        try:
            workers = app.runners(topics, scheduler=not options["no_scheduler"], **worker_options)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        run_until_stopped(
            workers,
            f"pillarbox worker running {len(app.tasks)} task(s) of the project on "
            f"{', '.join(topics or app.topics())} (group {app.group}), broker {app.broker.url}",
        )
        log.info("pillarbox worker stopped")


def _default_logging() -> None:
    """Logs go through Django's LOGGING; when it configures nothing that
    would show the worker's INFO lines, print them to stderr, as a worker
    that says nothing is hard to run."""
    logger = logging.getLogger("pillarbox")
    current = logger
    while current is not None:
        if current.handlers:
            return
        if not current.propagate:
            break
        current = current.parent  # type: ignore[assignment]
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
