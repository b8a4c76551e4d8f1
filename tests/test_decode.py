"""Decoders on hand-made raw outputs whose right answer is known from the manifest."""

from __future__ import annotations

import numpy as np

from perception.decode import decode_detections, decode_twinlitenet, nms, yolox_grid
from perception.preprocess import Placement
from perception.zoo.registry import get_spec


def test_yolox_grid_layout() -> None:
    grid, stride = yolox_grid(416, 416)
    assert grid.shape == (3549, 2) and stride.shape == (3549, 1)
    assert tuple(grid[1]) == (1, 0) and tuple(grid[52]) == (0, 1)  # row-major, x inner
    assert stride[2703, 0] == 8 and stride[2704, 0] == 16 and stride[-1, 0] == 32
    assert tuple(grid[2704 + 676]) == (0, 0)


def test_yolox_one_box_mapped_to_frame() -> None:
    spec = get_spec("yolox-nano")
    rows = np.zeros((1, 3549, 85), np.float32)
    row = 2704 + 26 * 5 + 7  # stride 16, cell x=7, y=5
    rows[0, row, :4] = (0.5, 0.25, np.log(4.0), np.log(2.0))
    rows[0, row, 4] = 0.9
    rows[0, row, 5 + 2] = 0.8  # car
    ratio = 416 / 960
    (detections,) = decode_detections([rows], spec, [Placement(ratio, ratio)], [(960, 540)])
    assert len(detections) == 1
    d = detections[0]
    cx, cy, w, h = (7.5) * 16, (5.25) * 16, 64, 32
    expected = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) / ratio
    np.testing.assert_allclose(d.box, expected, atol=0.06)
    assert (d.class_id, d.label, d.category) == (2, "car", "car")
    assert abs(d.score - 0.72) < 1e-4


def test_fastestdet_one_box() -> None:
    spec = get_spec("fastestdet")
    grid = np.zeros((1, 85, 22, 22), np.float32)
    grid[0, 0, 10, 3] = 0.9  # objectness at row y=10, column x=3
    grid[0, 1:5, 10, 3] = (np.arctanh(0.5), 0.0, np.log(0.25 / 0.75), 0.0)
    grid[0, 5 + 0, 10, 3] = 0.95  # person
    (detections,) = decode_detections([grid], spec, [Placement(352 / 1280, 352 / 720)],
                                      [(1280, 720)])
    d = detections[0]
    cx, cy, w, h = 3.5 / 22 * 1280, 10 / 22 * 720, 0.25 * 1280, 0.5 * 720
    np.testing.assert_allclose(d.box, [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2],
                               atol=0.1)
    assert d.label == "person" and abs(d.score - 0.9 ** 0.6 * 0.95 ** 0.4) < 1e-4


def test_nms_is_per_class() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]], np.float32)
    keep = nms(boxes, np.array([0.9, 0.8, 0.7]), np.array([2, 2, 7]), 0.3, 0.45)
    assert sorted(keep.tolist()) == [0, 2]


def test_twinlitenet_compare_equals_argmax_with_ties() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(2, 2, 36, 64)).astype(np.float32)
    scores[0, 1, :4] = scores[0, 0, :4]  # ties: argmax picks background
    drivable, lanes = decode_twinlitenet(scores, scores[:, ::-1])
    assert drivable.dtype == np.uint8 and drivable.shape == (2, 36, 64)
    np.testing.assert_array_equal(drivable, scores.argmax(1))
    np.testing.assert_array_equal(lanes, scores[:, ::-1].argmax(1))
