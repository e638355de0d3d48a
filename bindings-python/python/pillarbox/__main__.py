"""``pillarbox worker MODULE:APP``: runs an app's tasks (also ``python -m pillarbox worker ...``)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import List, Optional

from .tasks import App


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
    parser = argparse.ArgumentParser(prog="pillarbox", description="Pillarbox's Python commands.")
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="run the tasks of an app until SIGTERM or Ctrl-C")
    worker.add_argument("app", help="the app, as module:attribute (e.g. myproject.tasks:app)")
    worker.add_argument("--topics", help="comma-separated topics to run (default: all of the app's)")
    worker.add_argument("--concurrency", "-c", type=int, default=1, help="handlers running at once per topic")
    worker.add_argument("--loglevel", "-l", default="INFO", help="logging level (default INFO)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = load_app(args.app)
    topics = [t for t in args.topics.split(",") if t] if args.topics else None
    app.run_worker(topics, concurrency=args.concurrency)


if __name__ == "__main__":
    main()
