from django.db import models


class Event(models.Model):
    """What a task did: the worker writes, the tests wait for it."""

    name = models.CharField(max_length=100)
    value = models.CharField(max_length=200, blank=True)

    def __str__(self) -> str:
        return f"{self.name}={self.value}"


class Order(models.Model):
    """Created in a transaction that publishes on commit."""

    email = models.CharField(max_length=200)
