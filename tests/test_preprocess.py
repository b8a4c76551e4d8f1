"""Preprocessing against plain numpy/OpenCV references of each convention."""

from __future__ import annotations

import numpy as np
import pytest

from perception.modelspec import InputSpec
from perception.preprocess import Placement, fit, preprocess

RNG = np.random.default_rng(0)


def frame(height: int = 540, width: int = 960) -> np.ndarray:
    return RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_stretch_rgb_scaled() -> None:
    import cv2

    image = frame()
    spec = InputSpec(width=640, height=360, color="rgb", scale=1 / 255)
    blob, placements = preprocess([image], spec)
    reference = cv2.resize(image, (640, 360))[:, :, ::-1].astype(np.float32) / 255
    assert blob.shape == (1, 3, 360, 640) and blob.dtype == np.float32
    assert blob.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(blob[0], reference.transpose(2, 0, 1), atol=1e-6)
    assert placements[0] == Placement(640 / 960, 360 / 540)


def test_letterbox_top_left_keeps_0_255_bgr() -> None:
    import cv2

    image = frame(375, 1242)
    spec = InputSpec(width=416, height=416, resize="letterbox", pad_value=114, scale=1.0)
    blob, (placement,) = preprocess([image], spec)
    ratio = min(416 / 375, 416 / 1242)
    new_w, new_h = int(1242 * ratio), int(375 * ratio)
    reference = np.full((416, 416, 3), 114, np.float32)
    reference[:new_h, :new_w] = cv2.resize(image, (new_w, new_h))
    np.testing.assert_array_equal(blob[0], reference.transpose(2, 0, 1))
    assert (placement.pad_x, placement.pad_y) == (0.0, 0.0)
    assert placement.scale_x == placement.scale_y == pytest.approx(ratio)


def test_letterbox_centre_and_box_mapping() -> None:
    image = frame(200, 400)
    spec = InputSpec(width=100, height=100, resize="letterbox", letterbox_anchor="center")
    fitted, placement = fit(image, spec)
    assert (placement.pad_x, placement.pad_y) == (0.0, 25.0)
    assert (fitted[0, 0] == 114).all() and (fitted[99, 99] == 114).all()
    box_in_input = np.array([[10.0, 35.0, 50.0, 60.0]], np.float32)
    np.testing.assert_allclose(placement.boxes_to_frame(box_in_input), [[40, 40, 200, 140]])


def test_mean_std() -> None:
    image = frame(4, 4)
    spec = InputSpec(width=4, height=4, scale=1 / 255, mean=(0.485, 0.456, 0.406),
                     std=(0.229, 0.224, 0.225), color="rgb")
    blob, _ = preprocess([image], spec)
    rgb = image[:, :, ::-1].astype(np.float32) / 255
    reference = (rgb - np.float32([0.485, 0.456, 0.406])) / np.float32([0.229, 0.224, 0.225])
    np.testing.assert_allclose(blob[0], reference.transpose(2, 0, 1), atol=1e-5)


def test_batch_of_different_sizes() -> None:
    spec = InputSpec(width=352, height=352, scale=1 / 255, interpolation="area")
    images = [frame(540, 960), frame(375, 1242), frame(720, 1280)]
    blob, placements = preprocess(images, spec)
    assert blob.shape == (3, 3, 352, 352) and blob.flags["C_CONTIGUOUS"]
    single, _ = preprocess(images[1:2], spec)
    np.testing.assert_array_equal(blob[1], single[0])
    assert [p.scale_x for p in placements] == [352 / 960, 352 / 1242, 352 / 1280]


def test_letterbox_of_a_strip_keeps_one_pixel() -> None:
    spec = InputSpec(width=416, height=416, resize="letterbox")
    for height, width in ((10000, 1), (1, 10000), (1, 1)):
        fitted, placement = fit(np.full((height, width, 3), 200, np.uint8), spec)
        assert fitted.shape == (416, 416, 3)
        assert (fitted == 200).any(), "the strip itself is in the input"
        assert placement.scale_x == pytest.approx(min(416 / width, 416 / height))
