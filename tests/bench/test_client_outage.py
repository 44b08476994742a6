"""The client-seen outage of bench/client_outage.py, as the benchmark computes it."""

from __future__ import annotations

import pytest

from bench.client_outage import Sample, measure


def steady(start: float, end: float, *, ok: bool = True, latency: float = 0.002) -> list[Sample]:
    """A request every 10 ms from `start` to `end`, each answered after `latency`."""
    count = round((end - start) / 0.01)
    return [Sample(start + i * 0.01, start + i * 0.01 + latency, ok) for i in range(count)]


def test_the_outage_runs_from_the_first_bad_request_to_the_first_success_after() -> None:
    # Refused for a second (a stop), then a short freeze (requests answered late), then fine.
    samples = [
        *steady(0.0, 1.0),
        *steady(1.0, 2.0, ok=False),
        *steady(2.0, 3.0),
        *[Sample(3.0 + i * 0.01, 3.2, True) for i in range(20)],  # frozen until 3.2
        *steady(3.2, 4.0),
    ]
    outage = measure(samples, since=0.5, stall=0.055)
    assert outage.seconds == pytest.approx(1.002)  # 1.0 → the success sent at 2.0
    assert outage.failed == 100
    assert outage.stalled == 15  # those that waited more than 55 ms of the 200 ms freeze
    assert outage.max_latency == pytest.approx(0.2)
    # The freeze alone: from the first request answered late to the end of the freeze.
    assert measure(samples, since=2.5, stall=0.055).seconds == pytest.approx(0.2)
    # Before `since` nothing counts; a client never answered again is out until its end.
    assert measure(samples, since=3.3, stall=0.05).seconds == 0.0
    never = measure([*steady(0.0, 1.0), *steady(1.0, 2.0, ok=False)], since=0.0, stall=0.05)
    assert never.seconds == pytest.approx(0.992)
