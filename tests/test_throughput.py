"""Calibration's throughput figure from the feed's request times (harness/throughput.py)."""
import pytest

from harness.throughput import TooFewBatches, rates


def test_rate_between_requests_is_exact_whatever_the_window_edges():
    # 2048 tokens per request, one request every 0.5 s: 4096 tokens/s, however the
    # requests fall against any window
    times = [(10.0 + 0.5 * i, 2048) for i in range(23)]
    r = rates(times, windows=5)
    assert r["tokens_per_s"] == pytest.approx(4096) and r["cv"] == pytest.approx(0, abs=1e-12)
    assert len(r["tokens_per_s_windows"]) == 5 and r["timed_requests"] == 23


def test_spread_over_windows_and_the_last_request_is_not_counted():
    # the first half at 1 s per request, the second at 0.5 s
    times = [(float(i), 1000) for i in range(11)] + [(10 + 0.5 * i, 1000) for i in range(1, 11)]
    r = rates(times, windows=2)
    assert r["tokens_per_s"] == pytest.approx(20 * 1000 / 15)  # 20 requests trained in 15 s
    assert r["tokens_per_s_windows"] == pytest.approx([1000, 2000]) and r["cv"] == pytest.approx(1 / 3)


def test_too_few_requests_is_an_error_that_says_what_to_change():
    with pytest.raises(TooFewBatches, match="calibrate.window_seconds"):
        rates([(0.0, 10), (1.0, 10)], windows=3)
