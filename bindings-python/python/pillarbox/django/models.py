"""What the worker writes about Django Tasks (so ``get_result`` works from
any process), and a table-less model that gives the admin its Pillarbox
section (queues and dead letters live in the broker, not in the database)."""

from __future__ import annotations

from django.db import models


class TaskRecord(models.Model):
    """One enqueued Django Task: its call, its status and its outcome."""

    STATUSES = [("READY", "Ready"), ("RUNNING", "Running"), ("FAILED", "Failed"), ("SUCCESSFUL", "Successful")]

    id = models.CharField(primary_key=True, max_length=64)
    task_path = models.CharField(max_length=255)
    backend = models.CharField(max_length=100)
    queue_name = models.CharField(max_length=100)
    priority = models.IntegerField(default=0)
    run_after = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=STATUSES, default="READY", db_index=True)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_attempted_at = models.DateTimeField(null=True, blank=True)
    return_value = models.JSONField(null=True, blank=True)
    # [{"exception_class_path": ..., "traceback": ...}], one per failed attempt
    errors = models.JSONField(default=list)
    # one entry per attempt: the framework counts attempts this way
    worker_ids = models.JSONField(default=list)

    class Meta:
        verbose_name = "task result"
        ordering = ["-enqueued_at"]

    def __str__(self) -> str:
        return f"{self.task_path} {self.id} {self.status}"


class Queue(models.Model):
    """No table: the admin's operator pages (figures, dead letters) hang
    off this model so that they appear under Pillarbox with permissions."""

    class Meta:
        managed = False
        verbose_name = "queue and dead letters"
        verbose_name_plural = "queues and dead letters"
        default_permissions = ("view", "change", "delete")


class Schedule(models.Model):
    """No table: the admin's schedules page (the schedules live in the
    broker) hangs off this model, with its permissions: view to see,
    change to pause, resume and run now."""

    class Meta:
        managed = False
        verbose_name = "schedule"
        verbose_name_plural = "schedules"
        default_permissions = ("view", "change")
