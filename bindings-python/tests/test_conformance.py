"""The core's conformance scenarios, with Python handlers, on every backend:
the same list and assertions as the Rust tests, not a copy."""

from __future__ import annotations

import pytest

import pillarbox.conformance as conformance

SCENARIOS = conformance.scenarios()


def test_the_suite_is_the_cores() -> None:
    assert len(SCENARIOS) >= 22
    assert "round_trip_with_all_metadata" in SCENARIOS
    assert "graceful_shutdown_loses_nothing" in SCENARIOS


@pytest.mark.parametrize("asynchronous", [False, True], ids=["def", "async-def"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(url: str, scenario: str, asynchronous: bool) -> None:
    skipped = conformance.run_scenario(url, scenario, asynchronous=asynchronous)
    if skipped is not None:
        pytest.skip(skipped)
