"""The operator pages in the admin, with Django's test client."""

from __future__ import annotations

import html
from typing import Any, Callable

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.test.utils import override_settings
from django.urls import reverse

from pillarbox.django import get_app

from conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin_client_() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def test_only_staff_get_in(client: Client) -> None:
    url = reverse("admin:pillarbox_queue_changelist")
    assert client.get(url).status_code == 302  # anonymous: to the login page
    client.force_login(User.objects.create_user("user", password="pw"))
    refused = client.get(url)
    assert refused.status_code == 302 and "/login/" in refused["Location"]
    assert client.get(reverse("admin:pillarbox_dead_letters", args=["t", "g"])).status_code == 302
    assert client.post(reverse("admin:pillarbox_dead_letter_action", args=["t", "g"]), {"action": "purge"}).status_code == 302
    # Staff without the model's permissions: forbidden.
    client.force_login(User.objects.create_user("staff", password="pw", is_staff=True))
    assert client.get(url).status_code == 403
    staff = User.objects.get(username="staff")
    staff.user_permissions.add(Permission.objects.get(codename="view_queue"))
    client.force_login(staff)
    assert client.get(url).status_code == 200
    # Viewing is not redriving.
    assert client.post(reverse("admin:pillarbox_dead_letter_action", args=["t", "g"]), {"action": "redrive", "ids": ["x"]}).status_code == 403


def test_the_index_lists_pillarbox(admin_client_: Client) -> None:
    page = admin_client_.get(reverse("admin:index")).content.decode()
    assert "Pillarbox" in page and reverse("admin:pillarbox_queue_changelist") in page


def test_figures_per_topic_and_group(admin_client_: Client, dead_letters_on: Callable[..., str]) -> None:
    topic = dead_letters_on(["Boom", "Boom"])
    get_app().broker.publish(topic, b"waiting in line")
    with override_settings(PILLARBOX={"ADMIN_TOPICS": [topic]}):
        page = admin_client_.get(reverse("admin:pillarbox_queue_changelist")).content.decode()
    row = page[page.index(f"<td>{topic}</td>"):]
    row = row[: row.index("</tr>")]
    cells = [c.split(">", 1)[-1] for c in row.split("<td")[1:]]
    assert "workers" in cells[1]
    assert cells[2].startswith("1<")  # ready
    assert cells[3].startswith("0<")  # in flight
    assert ">2</a>" in cells[5]  # dead letters, linked
    # As the page shows it: a URL's `&` is `&amp;` in HTML.
    assert html.escape(get_app().broker.url) in page
    for topic_of_project in get_app().topics():
        assert f"<td>{topic_of_project}</td>" in page


def test_dead_letters_with_their_reason(admin_client_: Client, dead_letters_on: Callable[..., str]) -> None:
    topic = dead_letters_on(["Boom", "Bust"])
    page = admin_client_.get(reverse("admin:pillarbox_dead_letters", args=[topic, "workers"])).content.decode()
    assert "Boom failure number 0" in page and "Bust failure number 1" in page
    assert "not_retryable" in page
    filtered = admin_client_.get(reverse("admin:pillarbox_dead_letters", args=[topic, "workers"]), {"error_kind": "Bust"})
    assert "Bust failure" in filtered.content.decode() and "Boom failure" not in filtered.content.decode()


def test_redrive_selected_after_confirmation(admin_client_: Client, dead_letters_on: Callable[..., str]) -> None:
    topic = dead_letters_on(["Boom", "Boom", "Boom"])
    broker, action = get_app().broker, reverse("admin:pillarbox_dead_letter_action", args=[topic, "workers"])
    first = broker.dead_letters(topic, "workers")[0].message.id
    confirm = admin_client_.post(action, {"action": "redrive", "scope": "selected", "ids": [first]})
    assert confirm.status_code == 200
    text = confirm.content.decode()
    assert "Are you sure?" in text and "<strong>1</strong> dead letter(s)" in text and first in text
    assert broker.inspect(topic, "workers").dead_letters == 3  # nothing done yet
    done = admin_client_.post(action, {"action": "redrive", "scope": "selected", "ids": [first], "confirm": "yes"})
    assert done.status_code == 302
    wait_for(lambda: broker.inspect(topic, "workers").dead_letters == 2, what="two dead letters left")
    wait_for(lambda: broker.inspect(topic, "workers").ready == 1, what="the redriven message")
    assert first not in [d.message.id for d in broker.dead_letters(topic, "workers")]
    follow = admin_client_.get(done["Location"]).content.decode()
    assert "Redrove 1 dead letter(s)" in follow


def test_purge_filtered_after_confirmation(admin_client_: Client, dead_letters_on: Callable[..., str]) -> None:
    topic = dead_letters_on(["Boom", "Bust", "Boom"])
    broker, action = get_app().broker, reverse("admin:pillarbox_dead_letter_action", args=[topic, "workers"])
    form = {"action": "purge", "scope": "filter", "error_kind": "Boom"}
    confirm = admin_client_.post(action, form).content.decode()
    assert "Permanently delete" in confirm and "<strong>2</strong>" in confirm
    assert broker.inspect(topic, "workers").dead_letters == 3
    admin_client_.post(action, {**form, "confirm": "yes"})
    left = wait_for(lambda: [d for d in broker.dead_letters(topic, "workers")] if broker.inspect(topic, "workers").dead_letters == 1 else None, what="one dead letter left")
    assert left[0].reason.error_kind == "Bust"


def test_no_selection_changes_nothing(admin_client_: Client, dead_letters_on: Callable[..., str]) -> None:
    topic = dead_letters_on(["Boom"])
    action = reverse("admin:pillarbox_dead_letter_action", args=[topic, "workers"])
    reply = admin_client_.post(action, {"action": "purge", "scope": "selected"})
    assert reply.status_code == 302
    assert get_app().broker.inspect(topic, "workers").dead_letters == 1


def test_task_results_are_listed(admin_client_: Client) -> None:
    from testproject.shop import tasks

    result = tasks.add.enqueue(1, 2)
    page = admin_client_.get(reverse("admin:pillarbox_taskrecord_changelist")).content.decode()
    assert "testproject.shop.tasks.add" in page and "Ready" in page
    assert admin_client_.get(reverse("admin:pillarbox_taskrecord_change", args=[result.id])).status_code == 200


def test_schedules_are_listed_paused_resumed_and_run_now(admin_client_: Client) -> None:
    import uuid

    broker = get_app().broker
    name, topic = f"nightly-{uuid.uuid4().hex[:8]}", f"sched-{uuid.uuid4().hex[:8]}"
    broker.ensure_group(topic, "g")
    broker.upsert_schedule(name, topic, b"import", cron="30 2 * * *", zone="Europe/Berlin")
    page_url = reverse("admin:pillarbox_schedule_changelist")
    action = reverse("admin:pillarbox_schedule_action", args=[name])
    try:
        assert reverse("admin:pillarbox_schedule_changelist") in admin_client_.get(reverse("admin:index")).content.decode()
        page = admin_client_.get(page_url).content.decode()
        assert name in page and "30 2 * * *" in page and "Europe/Berlin" in page and "Run now" in page

        done = admin_client_.post(action, {"action": "pause"}, follow=True).content.decode()
        assert f"Paused {name}" in done
        assert [s.paused for s in broker.schedules() if s.name == name] == [True]
        admin_client_.post(action, {"action": "resume"})
        assert [s.paused for s in broker.schedules() if s.name == name] == [False]

        ran = admin_client_.post(action, {"action": "run"}, follow=True).content.decode()
        assert f"Ran {name} now" in ran
        wait_for(lambda: broker.inspect(topic, "g").ready == 1, what="the run-now message")
        # A manual run is not a tick: the schedule's state is as it was.
        assert [s.last_run for s in broker.schedules() if s.name == name] == [None]

        missing = admin_client_.post(reverse("admin:pillarbox_schedule_action", args=["no-such"]), {"action": "run"}, follow=True)
        assert "There is no schedule no-such" in missing.content.decode()
    finally:
        broker.remove_schedule(name)


def test_seeing_schedules_is_not_changing_them(client: Client) -> None:
    staff = User.objects.create_user("viewer", password="pw", is_staff=True)
    page_url = reverse("admin:pillarbox_schedule_changelist")
    client.force_login(staff)
    assert client.get(page_url).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_schedule"))
    client.force_login(staff)
    page = client.get(page_url)
    assert page.status_code == 200 and "Run now" not in page.content.decode()
    assert client.post(reverse("admin:pillarbox_schedule_action", args=["any"]), {"action": "run"}).status_code == 403
