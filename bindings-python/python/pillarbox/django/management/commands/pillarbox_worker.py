"""``python manage.py pillarbox_worker [--topics a,b] [--concurrency N]``:
runs the project's tasks (``@pillarbox.django.task`` and Django Tasks sent
through ``PillarboxBackend``) until SIGTERM or Ctrl-C, then stops
gracefully: no new messages, running tasks get ``SHUTDOWN_GRACE`` to finish."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any, Dict, List

from django.core.management.base import BaseCommand, CommandError, CommandParser

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

    def handle(self, *args: Any, **options: Any) -> None:
        _default_logging()
        app = get_app()
        topics = [t for spec in options["topics"] or [] for t in spec.split(",") if t] or None
        worker_options: Dict[str, Any] = {}
        if options["concurrency"] is not None:
            if options["concurrency"] < 1:
                raise CommandError("--concurrency must be at least 1")
            worker_options["concurrency"] = options["concurrency"]
        try:
            workers = app.workers(topics, **worker_options)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        stop = threading.Event()
        previous = {}

        def request_stop(signum: int, frame: Any) -> None:
            if stop.is_set() and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop at once
            log.info("%s received: shutting down gracefully", signal.Signals(signum).name)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, request_stop)
        threads: List[threading.Thread] = [
            threading.Thread(target=w.run, name=f"pillarbox-{w.consumer_name}", daemon=True) for w in workers
        ]
        try:
            for t in threads:
                t.start()
            log.info(
                "pillarbox worker running %d task(s) of the project on %s (%s), broker %s",
                len(app.tasks), ", ".join(topics or app.topics()), f"group {app.group}", app.broker.url,
            )
            # Wakes up regularly so that signals are handled promptly.
            while not stop.wait(0.2) and any(t.is_alive() for t in threads):
                pass
        finally:
            for w in workers:
                w.shutdown()
            for t in threads:
                t.join()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
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
