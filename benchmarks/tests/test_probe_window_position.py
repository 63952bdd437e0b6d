import numpy as np
import pytest

from benchmarks.probe_window_position import band_of, percentiles, profile


def test_band_of_full_windows_and_the_short_last_one():
    assert band_of(0, 3000, 1024) == ("full", 0)
    assert band_of(1023, 3000, 1024) == ("full", 7)
    assert band_of(1024 + 128, 3000, 1024) == ("full", 1)
    # the last window holds 952 tokens: its eighths are of its own length
    assert band_of(2048, 3000, 1024) == ("short", 0)
    assert band_of(2999, 3000, 1024) == ("short", 7)
    assert band_of(2048 + 476, 3000, 1024) == ("short", 4)
    # a context of whole windows has no short one
    assert band_of(2047, 2048, 1024) == ("full", 7)


def test_percentiles_rank_within_the_instance():
    assert np.allclose(percentiles(np.array([3.0, 1.0, 2.0])), [5 / 6, 1 / 6, 3 / 6])


def test_profile_averages_per_band_and_keeps_gold_apart():
    chunk = [{"kind": "full", "band": 0, "rank": 0.2, "gold": False},
             {"kind": "full", "band": 0, "rank": 0.6, "gold": True},
             {"kind": "short", "band": 7, "rank": 0.9, "gold": True}]
    out = profile([{"chunks": chunk}])
    assert out["all"]["full"][0] == (pytest.approx(0.4), 2)
    assert out["gold"]["full"][0] == (0.6, 1)
    assert out["gold"]["short"][7] == (0.9, 1)
    assert np.isnan(out["all"]["short"][0][0]) and out["all"]["short"][0][1] == 0
