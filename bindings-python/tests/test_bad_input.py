"""Bad values for every option of a kind (numbers, durations, strings), generated from the surface every
language is checked against (tests/parity/surface.json): each is refused
with ``pillarbox.InvalidOption`` naming the option as Python spells it,
before anything starts or is published. The Node package runs the same
cases (test/bad-input.test.js)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

import pillarbox
import pillarbox.aio

SURFACE = json.loads((Path(__file__).resolve().parents[2] / "tests/parity/surface.json").read_text())


def bad_values(spec: Dict[str, Any]) -> List[Any]:
    """What a typo or a bug puts where this kind of option belongs."""
    kind = spec["kind"]
    if kind == "count":
        values: List[Any] = [-1, "4", 1.5, True, 2**70]
        if spec["min"] > 0:
            values.append(spec["min"] - 1)
        if "max" in spec:
            values.append(spec["max"] + 1)
        return values
    if kind == "duration":
        return [-1, -0.5, "1", math.nan, math.inf, True]
    if kind == "number":
        return ["2", math.nan, math.inf, True]
    if kind == "string":
        return [5, b"bytes", ["a"], True, "lone \udc00 surrogate"]
    raise AssertionError(f"no bad values for kind {kind}")


def cases(call: str) -> Iterator[Tuple[str, Any]]:
    for name, spec in SURFACE["calls"][call].items():
        if "kind" in spec and "python" in spec.get("languages", ["python"]):
            for value in bad_values(spec):
                yield name, value


@pytest.fixture(scope="module")
def broker() -> pillarbox.Broker:
    b = pillarbox.connect("memory://")
    b.ensure_group("t", "g")
    return b


def refused(name: str, make: Any) -> None:
    with pytest.raises(pillarbox.InvalidOption) as caught:
        make()
    assert caught.value.code == "INVALID_OPTION"
    assert f"`{name}`" in str(caught.value), str(caught.value)


@pytest.mark.parametrize("name,value", list(cases("worker")), ids=repr)
def test_worker_options(broker: pillarbox.Broker, name: str, value: Any) -> None:
    refused(name, lambda: pillarbox.Worker(broker, "t", "g", lambda job: None, **{name: value}))


@pytest.mark.parametrize("name,value", list(cases("retry")), ids=repr)
def test_retry_policy(broker: pillarbox.Broker, name: str, value: Any) -> None:
    policy = pillarbox.RetryPolicy(**{name: value})
    refused(name, lambda: pillarbox.Worker(broker, "t", "g", lambda job: None, retry=policy))


@pytest.mark.parametrize("name,value", list(cases("publish")), ids=repr)
def test_publish_options(broker: pillarbox.Broker, name: str, value: Any) -> None:
    refused(name, lambda: broker.publish("t", b"x", **{name: value}))
    assert broker.inspect("t", "g").ready + broker.inspect("t", "g").waiting == 0


@pytest.mark.parametrize("name,value", list(cases("app")), ids=repr)
def test_app_options(name: str, value: Any) -> None:
    refused(name, lambda: pillarbox.App("memory://", **{name: value}))


@pytest.mark.parametrize("name,value", list(cases("task")) + list(cases("signature")), ids=repr)
def test_task_and_signature_options(name: str, value: Any) -> None:
    app = pillarbox.App("memory://")
    refused(name, lambda: app.task(**{name: value})(lambda: None))
    refused(name, lambda: app.signature("elsewhere.task", **{name: value}))
    assert app.tasks == {}


@pytest.mark.parametrize("name,value", list(cases("upsert_schedule")), ids=repr)
def test_schedule_options(name: str, value: Any) -> None:
    broker = pillarbox.connect("memory://")
    base = {"every": 60} if name in ("cron", "zone") else {"cron": "0 3 * * *"}
    if name == "misfire_cap":
        base["misfire"] = "all"
    refused(name, lambda: broker.upsert_schedule("s", "t", b"x", **{**base, name: value}))
    assert broker.schedules() == []


def test_dead_letter_filters(broker: pillarbox.Broker) -> None:
    for name in ("error_kind", "cause", "error_contains"):
        for value in (5, b"Flaky", ["Flaky"], "lone \udc00"):
            refused(name, lambda: broker.redrive("t", "g", **{name: value}))
            refused(name, lambda: broker.purge("t", "g", **{name: value}))
    for value in ("m-1", [1], ["m", None], {"m": 1}):
        refused("message_ids", lambda: broker.redrive("t", "g", message_ids=value))
    refused("after", lambda: broker.dead_letters("t", "g", after=5))
    assert broker.redrive("t", "g", message_ids=("m-1",)) == 0


def test_dead_letter_limits(broker: pillarbox.Broker) -> None:
    for value in (-1, 0, "5", 2.5):
        refused("limit", lambda: broker.dead_letters("t", "g", limit=value))
    for value in (-1, "5"):
        refused("limit", lambda: broker.redrive("t", "g", limit=value))
    for value in ("fast", math.nan, True):
        refused("per_second", lambda: broker.redrive("t", "g", per_second=value))


def test_a_misspelt_option_is_an_invalid_option_naming_the_closest(broker: pillarbox.Broker) -> None:
    """As in Node: ``InvalidOption`` with the name meant, not Python's
    ``TypeError`` (which a typo in a worker's options would be in Celery)."""
    app = pillarbox.App("memory://")
    for make, typo, meant in (
        (lambda: pillarbox.Worker(broker, "t", "g", lambda job: None, concurency=4), "concurency", "concurrency"),
        (lambda: broker.publish("t", b"x", idempotencykey="k"), "idempotencykey", "idempotency_key"),
        (lambda: broker.redrive("t", "g", per_sec=5), "per_sec", "per_second"),
        # The asyncio facade checks when called, before anything is awaited.
        (lambda: pillarbox.aio.Broker.dead_letters(broker, "t", "g", limt=5), "limt", "limit"),  # type: ignore[arg-type]
        (lambda: pillarbox.RetryPolicy(max_retry=3), "max_retry", "max_retries"),
        (lambda: pillarbox.App("memory://", default_topics="x"), "default_topics", "default_topic"),
        (lambda: app.task(topics="x"), "topics", "topic"),
        (lambda: app.signature("n", topc="x"), "topc", "topic"),
    ):
        with pytest.raises(pillarbox.InvalidOption) as caught:
            make()  # type: ignore[call-arg]
        assert caught.value.option == typo, caught.value
        assert f"did you mean `{meant}`?" in str(caught.value), caught.value
    assert broker.inspect("t", "g").ready == 0
    # A TypeError of the call itself is still a TypeError.
    with pytest.raises(TypeError):
        broker.publish("t")  # type: ignore[call-arg]
