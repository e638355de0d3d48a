"""System checks: a bad ``PILLARBOX_URL`` or option shows up in
``manage.py check`` (and before ``runserver`` / ``migrate``), not as a
traceback at the first request.
"""

from __future__ import annotations

import re
import threading
from typing import Any, List, Optional

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from .. import errors
from .._broker import connect
from . import conf

EMBEDDED = ("memory", "sqlite")
#: How long a probe of a network URL's options may take before we stop waiting.
PROBE_SECONDS = 1.5
_OPTION_ERRORS = (errors.InvalidUrl, errors.InvalidOption, errors.BackendNotEnabled)


def url_problem(url: str) -> Optional[str]:
    """Why ``url`` cannot work, or None. Never contacts a network broker."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return f"{url!r} is not a broker URL: expected SCHEME://..., e.g. sqlite:///path/pillarbox.sqlite3 or redis://host:6379"
    if scheme.lower() in EMBEDDED:
        # Opening the embedded store is cheap and checks everything (options, path).
        try:
            connect(url).close()
        except errors.Error as exc:
            return str(exc)
        return None
    return _probe(scheme, rest)


def _probe(scheme: str, rest: str) -> Optional[str]:
    """Checks a network URL's shape and options by connecting to a closed
    local port instead of its host: the core validates the URL and its
    options before it connects, so either that fails at once (the problem
    we report) or the connection is refused (the URL is fine)."""
    netloc = re.split(r"[/?]", rest, maxsplit=1)[0]
    if not netloc.rpartition("@")[2]:
        return f"{scheme}://{rest}: no host"
    probe = f"{scheme}://127.0.0.1:1{rest[len(netloc):]}"
    found: List[Optional[str]] = []

    def attempt() -> None:
        try:
            connect(probe).close()
            found.append(None)
        except _OPTION_ERRORS as exc:
            found.append(str(exc).replace(probe, f"{scheme}://…"))
        except Exception:
            found.append(None)

    thread = threading.Thread(target=attempt, name="pillarbox-check", daemon=True)
    thread.start()
    thread.join(PROBE_SECONDS)
    return found[0] if found else None


@register("pillarbox")
def check_settings(app_configs: Any = None, **kwargs: Any) -> List[CheckMessage]:
    """``PILLARBOX_URL`` and the ``PILLARBOX`` options."""
    messages: List[CheckMessage] = []
    value = getattr(settings, "PILLARBOX_URL", None)
    if value is not None and not isinstance(value, str):
        messages.append(
            Error(f"PILLARBOX_URL must be a string, not {type(value).__name__}", id="pillarbox.E001")
        )
    else:
        problem = url_problem(conf.url())
        if problem is not None:
            messages.append(
                Error(
                    f"PILLARBOX_URL is invalid: {problem}",
                    hint="for example sqlite:///path/to/pillarbox.sqlite3, redis://localhost:6379, "
                    "amqp://guest:guest@localhost:5672/%2f or kafka://localhost:9092",
                    id="pillarbox.E001",
                )
            )
    for key, why in conf.problems().items():
        # A schedule's problem is keyed `SCHEDULES:name`.
        setting, _, schedule = key.partition(":")
        where = f"PILLARBOX[{setting!r}]" + (f"[{schedule!r}]" if schedule else "")
        messages.append(Error(f"{where} {why}", id="pillarbox.E002"))
    store = conf.raw().get("IDEMPOTENCY_STORE")
    if isinstance(store, str):
        problem = url_problem(store)
        if problem is not None:
            messages.append(Error(f"PILLARBOX['IDEMPOTENCY_STORE'] is invalid: {problem}", id="pillarbox.E003"))
    typos = [
        name
        for name in dir(settings)
        if name.startswith("PILLARBOX_") and name != "PILLARBOX_URL" and name.isupper()
    ]
    for name in typos:
        messages.append(
            Warning(
                f"{name} is not a Pillarbox setting",
                hint="Pillarbox reads PILLARBOX_URL and the PILLARBOX dict; options go in the dict",
                id="pillarbox.W001",
            )
        )
    return messages
