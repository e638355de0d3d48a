"""Settings and system checks: bad settings show up in ``manage.py check``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test.utils import override_settings

from pillarbox.django import conf

HERE = Path(__file__).resolve().parent
# Django's model checks look at the database (JSON support).
pytestmark = pytest.mark.django_db


def ids(**overrides: object) -> dict:
    with override_settings(**overrides):
        return {m.id: m.msg for m in checks.run_checks() if m.id and m.id.startswith("pillarbox")}


def test_the_test_settings_pass_every_check() -> None:
    call_command("check")  # raises SystemCheckError on any error


def test_an_unset_url_means_sqlite_beside_the_project() -> None:
    with override_settings(PILLARBOX_URL=None):
        assert conf.url() == f"sqlite://{Path(settings.BASE_DIR) / 'pillarbox.sqlite3'}"
    assert ids(PILLARBOX_URL=None) == {}


@pytest.mark.parametrize(
    "url, says",
    [
        ("localhost:6379", "not a broker URL"),
        ("rabbit://localhost", "unknown URL scheme `rabbit`"),
        ("redis://localhost:6379?max_lenn=10", "unknown option for redis://"),
        ("amqp://guest:guest@localhost:5672/%2f?heartbeat=oops", "unknown option for amqp://"),
        ("kafka://localhost:9092?partitions=many", "partitions"),
        ("sqlite:///no/such/folder/queue.db", "cannot reach the sqlite broker"),
        ("sqlite:///tmp/q.db?synchronous=sometimes", "synchronous"),
    ],
)
def test_a_bad_url_is_an_error_with_the_reason(url: str, says: str) -> None:
    started = time.monotonic()
    found = ids(PILLARBOX_URL=url)
    assert "pillarbox.E001" in found, found
    assert says in found["pillarbox.E001"]
    # Network URLs are checked without reaching their host.
    assert time.monotonic() - started < 3


def test_good_network_urls_pass_without_a_broker() -> None:
    for url in ("redis://nowhere.invalid:6379/0?max_len=1000", "amqp://u:p@nowhere.invalid/%2f", "kafka://a.invalid:9092,b.invalid:9092"):
        assert ids(PILLARBOX_URL=url) == {}, url


def test_unknown_and_invalid_options_are_errors() -> None:
    with override_settings(PILLARBOX={"MAX_RETRIS": 3, "CONCURRENCY": 0, "RETRY_DELAY": "soon"}):
        found = [m for m in checks.run_checks() if m.id == "pillarbox.E002"]
    text = "\n".join(m.msg for m in found)
    assert len(found) == 3, text
    assert "PILLARBOX['MAX_RETRIS'] unknown option (did you mean MAX_RETRIES?)" in text
    assert "PILLARBOX['CONCURRENCY'] must be a whole number from 1 to 10000, not 0" in text
    assert "RETRY_DELAY" in text
    # The core's largest concurrency, not only the smallest.
    with override_settings(PILLARBOX={"CONCURRENCY": 10_001}):
        found = [m for m in checks.run_checks() if m.id == "pillarbox.E002"]
    assert [m.msg for m in found] == ["PILLARBOX['CONCURRENCY'] must be a whole number from 1 to 10000, not 10001"]


def test_a_misspelt_setting_is_a_warning() -> None:
    assert "pillarbox.W001" in ids(PILLARBOX_ULR="redis://x")


def test_unknown_backend_options_are_errors() -> None:
    tasks = {"default": {"BACKEND": "pillarbox.django.PillarboxBackend", "OPTIONS": {"retention": 60}}}
    found = ids(TASKS=tasks)
    assert "pillarbox.E010" in found
    assert "'retention'" in found["pillarbox.E010"]


def test_manage_py_check_reports_a_bad_url_without_a_traceback() -> None:
    env = {**os.environ, "PILLARBOX_TEST_URL": "redis://localhost:6390?pool=5"}
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=HERE, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done
    assert "(pillarbox.E001) PILLARBOX_URL is invalid: invalid option `pool`" in done.stderr
    assert "Traceback" not in done.stderr


def test_call_command_check_fails_on_a_bad_option() -> None:
    with override_settings(PILLARBOX={"CONCURENCY": 2}), pytest.raises(SystemCheckError, match="CONCURENCY"):
        call_command("check")


def test_schedules_are_checked_as_the_worker_will_make_them() -> None:
    schedules = {
        "nightly": {"task": "shop.tasks.record", "cron": "61 * * * *"},
        "fine": {"task": "shop.tasks.record", "every": 60, "args": ["tick"]},
        "daily": "0 3 * * *",
        "typo": {"task": "shop.tasks.record", "crn": "* * * * *"},
        "no task": {"cron": "0 3 * * *"},
        "mars": {"task": "shop.tasks.record", "cron": "0 3 * * *", "zone": "Mars/Olympus"},
    }
    with override_settings(PILLARBOX={"SCHEDULES": schedules}):
        found = sorted(m.msg for m in checks.run_checks() if m.id == "pillarbox.E002")
    text = "\n".join(found)
    assert len(found) == 5, text
    assert "PILLARBOX['SCHEDULES']['nightly'] invalid option `cron`" in text
    assert "PILLARBOX['SCHEDULES']['daily'] must be a dict" in text
    assert "PILLARBOX['SCHEDULES']['typo'] unknown key 'crn'" in text
    assert "PILLARBOX['SCHEDULES']['no task'] needs 'task'" in text
    assert "PILLARBOX['SCHEDULES']['mars'] invalid option `zone`" in text
