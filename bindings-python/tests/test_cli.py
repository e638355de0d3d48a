"""The ``pillarbox`` console script: the Rust command's commands through the
package, and the Python ``worker`` command beside them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import List

import pillarbox


def command() -> List[str]:
    """The installed console script, else ``python -m pillarbox``."""
    script = shutil.which("pillarbox", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "pillarbox"]


def run(*args: str, stdin: str = "") -> "subprocess.CompletedProcess[str]":
    env = {k: v for k, v in os.environ.items() if k != "PILLARBOX_URL"}
    return subprocess.run([*command(), *args], input=stdin, capture_output=True, text=True, timeout=120, env=env)


def test_the_rust_commands_run_from_the_console_script(sqlite_url: str) -> None:
    broker = pillarbox.connect(sqlite_url)
    broker.ensure_group("orders", "g")
    published = run("--url", sqlite_url, "--json", "publish", "orders", "--lines", stdin="one\ntwo\n")
    assert published.returncode == 0, published.stderr
    ids = json.loads(published.stdout)
    assert len(ids) == 2
    figures = json.loads(run("--url", sqlite_url, "--json", "inspect", "orders", "g").stdout)
    assert figures[0]["ready"] == 2
    assert broker.inspect("orders", "g").ready == 2
    broker.close()


def test_errors_keep_their_exit_status(sqlite_url: str) -> None:
    unknown = run("--url", sqlite_url, "inspect", "nothing-here")
    assert unknown.returncode == 4
    assert "no groups" in unknown.stderr
    bad = run("--url", "nosuch://x", "groups", "t")
    assert bad.returncode == 2 and "unknown URL scheme" in bad.stderr


def test_help_lists_the_python_worker_command_too() -> None:
    shown = run("--help")
    assert shown.returncode == 0
    assert "dead-letters" in shown.stdout and "worker" in shown.stdout
