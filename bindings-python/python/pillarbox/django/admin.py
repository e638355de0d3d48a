"""Operator pages in the admin, under Pillarbox: the figures of every topic
and group, the dead letters with their reason, and redrive / purge with a
confirmation page; the schedules, with pause, resume and run now. Staff
only (the admin's own login), and Django's model permissions on
:class:`~pillarbox.django.models.Queue` (view to see, change to redrive,
delete to purge) and :class:`~pillarbox.django.models.Schedule` (view to
see, change to pause, resume and run now)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Dict, List, Optional

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.dateparse import parse_datetime

from . import conf
from .models import Queue, Schedule, TaskRecord
from .project import get_app

#: Dead letters per page.
PAGE = 50
#: How many dead letters a confirmation page counts before saying "at least".
COUNT_LIMIT = 10_000
FILTERS = ("error_kind", "cause", "error_contains", "failed_before")
CAUSES = ("retries_exhausted", "not_retryable", "malformed", "redelivery_limit")


def known_topics() -> List[str]:
    """The project's topics and ``PILLARBOX['ADMIN_TOPICS']``."""
    return sorted(set(get_app().topics()) | set(conf.option("ADMIN_TOPICS") or []))


def read_filter(data: Any) -> Dict[str, Any]:
    """The dead-letter filter in a request's GET or POST (empty fields left out)."""
    found: Dict[str, Any] = {}
    for name in FILTERS:
        value = (data.get(name) or "").strip()
        if not value:
            continue
        if name == "failed_before":
            when: Optional[datetime] = parse_datetime(value)
            if when is None:
                raise ValueError(f"failed_before: {value!r} is not a date and time (YYYY-MM-DD HH:MM)")
            found[name] = when
        else:
            found[name] = value
    return found


def matches(letter: Any, flt: Dict[str, Any]) -> bool:
    """The core's filter, for showing what an action on a filter would touch."""
    r = letter.reason
    return (
        ("error_kind" not in flt or r.error_kind == flt["error_kind"])
        and ("cause" not in flt or r.cause == flt["cause"])
        and ("error_contains" not in flt or flt["error_contains"] in r.error_message)
        and ("failed_before" not in flt or r.last_failed_at <= flt["failed_before"])
    )


def scan(topic: str, group: str, flt: Dict[str, Any], limit: int) -> List[Any]:
    """Up to ``limit`` dead letters matching ``flt``, oldest first."""
    broker = get_app().broker
    found: List[Any] = []
    after: Optional[str] = None
    while len(found) < limit:
        page = broker.dead_letters(topic, group, limit=500, after=after)
        found.extend(d for d in page if matches(d, flt))
        if len(page) < 500:
            break
        after = page[-1].id
    return found[:limit]


@admin.register(TaskRecord)
class TaskRecordAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Django Task results the worker stored (read-only)."""

    list_display = ("task_path", "status", "queue_name", "enqueued_at", "finished_at", "attempts")
    list_filter = ("status", "queue_name", "backend")
    search_fields = ("id", "task_path")
    readonly_fields = [f.name for f in TaskRecord._meta.fields]

    @admin.display(description="attempts")
    def attempts(self, obj: TaskRecord) -> int:
        return len(obj.worker_ids)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Queue)
class QueueAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """The operator pages (no table: everything comes from the broker)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_urls(self) -> List[Any]:
        wrap = self.admin_site.admin_view
        return [
            path("", wrap(self.changelist_view), name="pillarbox_queue_changelist"),
            path("<str:topic>/<str:group>/", wrap(self.dead_letters_view), name="pillarbox_dead_letters"),
            path("<str:topic>/<str:group>/action/", wrap(self.action_view), name="pillarbox_dead_letter_action"),
        ]

    def _context(self, request: HttpRequest, title: str, **extra: Any) -> Dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "broker_url": get_app().broker.url,
            **extra,
        }

    def changelist_view(self, request: HttpRequest, extra_context: Optional[Dict[str, Any]] = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        app = get_app()
        rows: List[Dict[str, Any]] = []
        for topic in known_topics():
            try:
                groups = app.broker.groups(topic) or [app.group]
            except Exception as exc:
                rows.append({"topic": topic, "group": app.group, "error": f"{type(exc).__name__}: {exc}"})
                continue
            for group in groups:
                try:
                    rows.append({"topic": topic, "group": group, "stats": app.broker.inspect(topic, group)})
                except Exception as exc:
                    rows.append({"topic": topic, "group": group, "error": f"{type(exc).__name__}: {exc}"})
        context = self._context(request, "Pillarbox queues", rows=rows, **(extra_context or {}))
        return TemplateResponse(request, "pillarbox/admin/queues.html", context)

    def dead_letters_view(self, request: HttpRequest, topic: str, group: str) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        broker = get_app().broker
        try:
            flt = read_filter(request.GET)
        except ValueError as exc:
            messages.error(request, str(exc))
            flt = {}
        after = request.GET.get("after") or None
        page = broker.dead_letters(topic, group, limit=PAGE, after=after)
        letters = [d for d in page if matches(d, flt)]
        context = self._context(
            request,
            f"Dead letters of {topic} / {group}",
            topic=topic,
            group=group,
            stats=broker.inspect(topic, group),
            letters=letters,
            next_after=page[-1].id if len(page) == PAGE else None,
            filter={name: request.GET.get(name, "") for name in FILTERS},
            filtered=bool(flt),
            causes=CAUSES,
            can_redrive=self.has_change_permission(request),
            can_purge=self.has_delete_permission(request),
        )
        return TemplateResponse(request, "pillarbox/admin/dead_letters.html", context)

    def action_view(self, request: HttpRequest, topic: str, group: str) -> HttpResponse:
        """Redrive or purge, selected dead letters or those matching the filter:
        a confirmation page first, then the action on a confirmed POST."""
        back = reverse("admin:pillarbox_dead_letters", args=[topic, group])
        if request.method != "POST":
            return HttpResponseRedirect(back)
        action = request.POST.get("action")
        if action == "redrive" and not self.has_change_permission(request):
            raise PermissionDenied
        if action == "purge" and not self.has_delete_permission(request):
            raise PermissionDenied
        if action not in ("redrive", "purge"):
            messages.error(request, "Unknown action.")
            return HttpResponseRedirect(back)
        scope = request.POST.get("scope", "selected")
        ids = [i for i in request.POST.getlist("ids") if i]
        try:
            flt = read_filter(request.POST)
        except ValueError as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(back)
        if scope == "selected":
            if not ids:
                messages.warning(request, "Select dead letters first, or act on those matching the filter.")
                return HttpResponseRedirect(back)
            criteria: Dict[str, Any] = {"message_ids": ids}
        else:
            criteria = dict(flt)
        if request.POST.get("confirm") != "yes":
            targets = scan(topic, group, {} if scope == "selected" else flt, COUNT_LIMIT)
            if scope == "selected":
                targets = [d for d in targets if d.message.id in set(ids)]
            context = self._context(
                request,
                f"Confirm: {action} dead letters of {topic} / {group}",
                topic=topic,
                group=group,
                action=action,
                scope=scope,
                ids=ids,
                filter={name: request.POST.get(name, "") for name in FILTERS},
                targets=targets[:PAGE],
                count=len(targets),
                at_least=len(targets) >= COUNT_LIMIT,
                everything=scope != "selected" and not flt,
                back=back,
            )
            return TemplateResponse(request, "pillarbox/admin/confirm.html", context)
        broker = get_app().broker
        if action == "redrive":
            done = broker.redrive(topic, group, **criteria)
            messages.success(request, f"Redrove {done} dead letter(s) of {topic} / {group}: they run again from attempt 1.")
        else:
            done = broker.purge(topic, group, **criteria)
            messages.success(request, f"Purged {done} dead letter(s) of {topic} / {group}.")
        return HttpResponseRedirect(back)


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """The schedules the broker keeps (no table), and what an operator does
    with one: pause, resume, run now."""

    ACTIONS = ("pause", "resume", "run")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Removing is for the command (`pillarbox schedules remove`): a
        # schedule declared in settings would come back at the next deploy.
        return False

    def get_urls(self) -> List[Any]:
        wrap = self.admin_site.admin_view
        return [
            path("", wrap(self.changelist_view), name="pillarbox_schedule_changelist"),
            path("<str:name>/action/", wrap(self.action_view), name="pillarbox_schedule_action"),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: Optional[Dict[str, Any]] = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        broker = get_app().broker
        error = None
        try:
            schedules = sorted(broker.schedules(), key=lambda s: s.name)
        except Exception as exc:
            schedules, error = [], f"{type(exc).__name__}: {exc}"
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Pillarbox schedules",
            "broker_url": broker.url,
            "schedules": schedules,
            "error": error,
            "can_change": self.has_change_permission(request),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "pillarbox/admin/schedules.html", context)

    def action_view(self, request: HttpRequest, name: str) -> HttpResponse:
        """Pause, resume or run now, on a POST."""
        back = reverse("admin:pillarbox_schedule_changelist")
        if request.method != "POST":
            return HttpResponseRedirect(back)
        if not self.has_change_permission(request):
            raise PermissionDenied
        action = request.POST.get("action")
        broker = get_app().broker
        if action == "pause":
            found = broker.pause_schedule(name)
            done = f"Paused {name}: its ticks are skipped until it is resumed."
        elif action == "resume":
            found = broker.resume_schedule(name)
            done = f"Resumed {name}: ticks missed while it was paused are not published."
        elif action == "run":
            message_id = broker.run_schedule_now(name)
            found = message_id is not None
            done = f"Ran {name} now: message {message_id}. Its next tick comes as planned."
        else:
            messages.error(request, "Unknown action.")
            return HttpResponseRedirect(back)
        if found:
            messages.success(request, done)
        else:
            messages.error(request, f"There is no schedule {name}.")
        return HttpResponseRedirect(back)
