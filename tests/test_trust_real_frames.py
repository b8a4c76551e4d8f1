"""Trust on real frames, with the default model: KITTI distances against their 3-D labels with
the right and with deliberately wrong cameras, and planning every shared still with its shipped
camera. The measures are scripts/benchmark_trust.py's, so this test and docs/benchmarks.md
agree."""

from __future__ import annotations

import json

import pytest

from perception.pipeline import Perceiver
from scripts.benchmark_trust import distance_figures, planning_figures


@pytest.fixture(scope="module")
def perceiver(models_mirror):
    perceiver = Perceiver.from_names(["multitask-lite"])
    yield perceiver
    perceiver.close()


def test_kitti_distances(perceiver, drives, record_property):
    figures = distance_figures(perceiver)
    record_property("figures", json.dumps(figures))
    print(json.dumps(figures, indent=1))
    assert figures["right"]["matched"] >= 15
    assert figures["right"]["median_rel_error"] <= 0.10
    for name, row in figures.items():  # pitch +-3 degrees, height +-30 %
        assert row["median_rel_error"] <= 0.25, name
        assert row["within_30_reported_beyond_60"] == 0, name


def test_plans_on_every_shared_still(perceiver, drives, record_property):
    figures = planning_figures(perceiver)
    record_property("figures", json.dumps(figures))
    print(json.dumps(figures, indent=1))
    for name, row in figures.items():
        assert row["unsafe"] == 0, f"{name}: ok above 3 m/s toward an in-path road user"
        assert row["on_drivable"] >= 0.98, name
        if "hood_pixels" in row:
            assert row["hood_pixels"] == 0 and row["hood_boxes"] == 0, name
    assert figures["udacity video"]["offset_change_median_m"] <= 0.2
    # A camera that fits is not doubted by the horizon, nor by a road user's two distances;
    # a false box above the horizon (a bush on a hillside) may still make a plan careful.
    assert figures["udacity"]["horizon_mismatch"] == 0
    assert figures["udacity"]["distances_disagree"] == 0
    assert figures["udacity"]["camera_mismatch"] <= figures["udacity"]["box_above_horizon"]
