"""The Python package's public surface against tests/parity/surface.json,
the description every language is checked against (the Rust and Node
packages have the same test): every option of the others is here, spelled
in snake_case, with no default other than unset or the core's."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Dict, Iterable

import pillarbox
import pillarbox.aio
from pillarbox import errors

ROOT = Path(__file__).resolve().parents[2]
SURFACE = json.loads((ROOT / "tests/parity/surface.json").read_text())


def expected(call: str) -> Dict[str, Any]:
    return {n: s for n, s in SURFACE["calls"][call].items() if "python" in s.get("languages", ["python"])}


def options(fn: Callable[..., Any], skip: Iterable[str] = ()) -> Dict[str, Any]:
    """The keyword options of ``fn`` with their defaults (positional ones in ``skip`` left out)."""
    params = inspect.signature(fn).parameters.values()
    return {
        p.name: p.default
        for p in params
        if p.name not in ("self", *skip) and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def seconds(value: Any) -> Any:
    return value.total_seconds() if isinstance(value, timedelta) else value


def check(call: str, found: Dict[str, Any]) -> None:
    want = expected(call)
    assert sorted(found) == sorted(want), f"{call}: Python has {sorted(found)}, the surface {sorted(want)}"
    for name, default in found.items():
        # Unset means the core's default; a literal default must be the core's.
        if default is not None and default is not inspect.Parameter.empty and not isinstance(default, tuple):
            assert seconds(default) == want[name]["default"], f"{call}.{name}: default {default!r}"


def test_worker_options() -> None:
    check("worker", options(pillarbox.Worker.__init__, skip=("broker", "topic", "group", "handler")))


def test_retry_policy() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(pillarbox.RetryPolicy)}
    check("retry", fields)
    for name, default in fields.items():
        assert seconds(default) == expected("retry")[name]["default"], f"retry.{name}"


def test_publish_options_in_every_facade() -> None:
    from pillarbox._broker import message

    for fn, skip in (
        (pillarbox.Broker.publish, ("topic", "payload")),
        (pillarbox.aio.Broker.publish, ("topic", "payload")),
        (message, ("payload",)),
        (pillarbox.Message, ("payload",)),
    ):
        check("publish", options(fn, skip=skip))
    # The Django facade, read from its source: Django is not installed here.
    source = Path(pillarbox.__file__).parent / "django/project.py"
    (fn,) = [n for n in ast.parse(source.read_text()).body if getattr(n, "name", "") == "publish_on_commit"]
    assert isinstance(fn, ast.FunctionDef)
    names = [a.arg for a in fn.args.args + fn.args.kwonlyargs if a.arg not in ("topic", "payload", "using")]
    assert sorted(names) == sorted(expected("publish")), f"publish_on_commit takes {names}"


def test_the_blocking_and_asyncio_brokers_have_the_same_calls() -> None:
    """Both facades are made from one definition per call (pillarbox._calls):
    the same names, parameters, defaults and docstrings."""
    public = lambda cls: sorted(n for n in vars(cls) if not n.startswith("_"))
    assert public(pillarbox.Broker) == public(pillarbox.aio.Broker)
    for name in public(pillarbox.Broker):
        blocking, awaiting = getattr(pillarbox.Broker, name), getattr(pillarbox.aio.Broker, name)
        if isinstance(blocking, property):
            continue
        assert inspect.signature(blocking) == inspect.signature(awaiting), name
        assert blocking.__doc__ == awaiting.__doc__, name


def test_task_layer_options() -> None:
    check("app", options(pillarbox.App.__init__, skip=("url",)))
    check("task", options(pillarbox.App.task, skip=("fn", "name")))
    check("apply_async", options(pillarbox.Task.apply_async, skip=("args",)))
    check("signature", options(pillarbox.App.signature, skip=("name",)))


def test_schedule_options_in_every_facade() -> None:
    for fn in (pillarbox.Broker.upsert_schedule, pillarbox.aio.Broker.upsert_schedule):
        check("upsert_schedule", options(fn, skip=("name", "topic", "payload")))


def test_the_native_defaults_are_the_surfaces() -> None:
    # pillarbox::surface, exported by the native module, which the
    # signatures and Django's settings read.
    for call, values in pillarbox._native.DEFAULTS.items():
        for name, value in values.items():
            assert SURFACE["calls"][call][name]["default"] == value, f"{call}.{name}"
    check("dead_letters", options(pillarbox.Broker.dead_letters, skip=("topic", "group")))
    check("dead_letters", options(pillarbox.aio.Broker.dead_letters, skip=("topic", "group")))


def test_no_default_is_written_in_python() -> None:
    """A number or a name as a default in the facade's source is a copy of
    the core's that a change of the core would not reach."""
    package = Path(pillarbox.__file__).parent
    found = []
    for path in [*package.glob("*.py"), package / "django/conf.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            values: list = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                values = [*node.args.defaults, *node.args.kw_defaults]
            elif isinstance(node, ast.ClassDef) and node.name == "RetryPolicy":
                values = [n.value for n in node.body if isinstance(n, ast.AnnAssign)]
            elif isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "DEFAULTS" for t in node.targets):
                values = list(getattr(node.value, "values", []))
            for value in values:
                literal = isinstance(value, ast.Constant) and isinstance(value.value, (int, float, str))
                if literal and not isinstance(value.value, bool) and value.value not in ("", 0):
                    found.append(f"{path.name}:{value.lineno}: {value.value!r}")
    assert found == [], "defaults written in Python instead of read from _native.DEFAULTS: " + ", ".join(found)


def test_error_codes_and_records() -> None:
    assert list(errors.BY_CODE) == SURFACE["error_codes"]
    public = lambda cls: sorted(n for n, v in vars(cls).items() if not n.startswith("_") and not callable(v))
    assert public(pillarbox._native.WorkerStats) == sorted(SURFACE["worker_stats"])
    assert public(pillarbox._native.GroupStats) == sorted(SURFACE["group_stats"])
    # Records, not dicts: the same fields as the core's and Node's.
    assert public(pillarbox.Capabilities) == sorted(SURFACE["capabilities"])
    assert public(pillarbox.Failures) == sorted(SURFACE["failures"])


def test_the_docs_table_is_generated_from_the_surface() -> None:
    table = subprocess.run(
        [sys.executable, str(ROOT / "tests/parity/table.py")], check=True, capture_output=True, text=True
    ).stdout
    assert (ROOT / "docs/api-parity.md").read_text() == table, "regenerate: python tests/parity/table.py > docs/api-parity.md"
