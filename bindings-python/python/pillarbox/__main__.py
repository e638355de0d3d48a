"""The ``pillarbox`` command (also ``python -m pillarbox``).

``pillarbox worker MODULE:APP`` runs an app's Python tasks; every other
command (``inspect``, ``dead-letters``, ``publish``, ``watch``, ``check``,
``metrics``...) is the Rust command's own code, run by the native module.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import List, Optional

from . import _native
from .tasks import App

WORKER_HELP = """
Python command:
  worker        Run the tasks of a Python app, and the schedules' ticks:
                pillarbox worker myproject.tasks:app [--concurrency N] [--no-scheduler]
"""


def load_app(spec: str) -> App:
    """The :class:`App` named ``module:attribute`` (``module`` alone means ``module:app``)."""
    module_name, _, attribute = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    app = getattr(module, attribute or "app", None)
    if not isinstance(app, App):
        raise SystemExit(f"pillarbox: {spec} is not a pillarbox.App")
    return app


def main(argv: Optional[List[str]] = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["worker"]:
        return worker(args)
    status = _native.cli(["pillarbox", *args])
    if not args or args[0] in ("-h", "--help", "help"):
        print(WORKER_HELP, end="")
    raise SystemExit(status)


def worker(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(prog="pillarbox", description="Pillarbox's Python commands.")
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="run the tasks of an app until SIGTERM or Ctrl-C")
    worker.add_argument("app", help="the app, as module:attribute (e.g. myproject.tasks:app)")
    worker.add_argument("--topics", help="comma-separated topics to run (default: all of the app's)")
    worker.add_argument("--concurrency", "-c", type=int, default=1, help="handlers running at once per topic")
    worker.add_argument("--loglevel", "-l", default="INFO", help="logging level (default INFO)")
    worker.add_argument(
        "--no-scheduler", action="store_true", help="do not publish the ticks of the broker's schedules"
    )
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = load_app(args.app)
    topics = [t for t in args.topics.split(",") if t] if args.topics else None
    app.run_worker(topics, scheduler=not args.no_scheduler, concurrency=args.concurrency)


if __name__ == "__main__":
    main()
