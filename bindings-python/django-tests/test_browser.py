"""The admin pages in a real browser: headless Chromium (Debian's package)
driven by Playwright, logging in and leaving screenshots in the test output."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest
from django.contrib.auth.models import User
from django.test.utils import override_settings

from pillarbox.django import get_app

CHROMIUM = os.environ.get("PILLARBOX_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("PILLARBOX_SCREENSHOTS", Path(__file__).resolve().parents[2] / ".pillarbox-test"))


@pytest.mark.django_db(transaction=True)
def test_admin_pages_in_chromium(live_server: Any, dead_letters_on: Callable[..., str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop; Django refuses sync ORM calls
    # from a thread with one unless told this test is fine with it.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    User.objects.create_superuser("ops", "ops@example.com", "s3cret-pass")
    topic = dead_letters_on(["SMTPError", "SMTPError", "TemplateError"])
    SHOTS.mkdir(parents=True, exist_ok=True)
    label = os.environ.get("PILLARBOX_TEST_LABEL", "django")
    with override_settings(PILLARBOX={"ADMIN_TOPICS": [topic]}), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{live_server.url}/admin/pillarbox/queue/")
            page.fill("#id_username", "ops")
            page.fill("#id_password", "s3cret-pass")
            page.click("input[type=submit]")
            page.wait_for_selector("#pillarbox-queues")
            assert topic in page.inner_text("#pillarbox-queues")
            queues = SHOTS / f"{label}-admin-queues.png"
            page.screenshot(path=str(queues), full_page=True)

            page.click(f"a[href='/admin/pillarbox/queue/{topic}/workers/']")
            page.wait_for_selector("#pillarbox-dead-letters")
            assert "TemplateError" in page.inner_text("#pillarbox-dead-letters")
            page.locator("#pillarbox-dead-letters input[type=checkbox]").first.check()
            page.click("button[value=redrive] >> nth=0")
            page.wait_for_selector("#pillarbox-confirm-summary")
            assert "Redrive" in page.inner_text("#pillarbox-confirm-summary")
            confirm = SHOTS / f"{label}-admin-confirm.png"
            page.screenshot(path=str(confirm), full_page=True)
            page.click("#pillarbox-confirm")
            page.wait_for_selector("#pillarbox-dead-letters")
            assert "Redrove 1 dead letter(s)" in page.content()
            letters = SHOTS / f"{label}-admin-dead-letters.png"
            page.screenshot(path=str(letters), full_page=True)

            # The schedules page: pause one, and see it paused.
            broker = get_app().broker
            name = f"nightly-import-{topic[-6:]}"
            broker.upsert_schedule(name, topic, b"{}", cron="30 2 * * *", zone="Europe/Berlin")
            try:
                page.goto(f"{live_server.url}/admin/pillarbox/schedule/")
                page.wait_for_selector("#pillarbox-schedules")
                row = page.locator("#pillarbox-schedules tr", has_text=name)
                row.locator("button[value=pause]").click()
                page.wait_for_selector("#pillarbox-schedules")
                assert f"Paused {name}" in page.content()
                assert "Resume" in page.locator("#pillarbox-schedules tr", has_text=name).inner_text()
                schedules = SHOTS / f"{label}-admin-schedules.png"
                page.screenshot(path=str(schedules), full_page=True)
            finally:
                broker.remove_schedule(name)
        finally:
            browser.close()
    for shot in (queues, confirm, letters, schedules):
        assert shot.stat().st_size > 10_000
        with capsys.disabled():  # in the suite's output, whatever pytest's verbosity
            print(f"\nscreenshot: {shot}")
