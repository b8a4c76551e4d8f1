"""Cameras that fit the frames: scaling, crops, `--camera-crop`, and what cannot be fitted."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from perception.cli import main as cli_main
from perception.commands.options import add_plan_arguments, planning_camera
from perception.driving.camera import CameraError, fit_to_frame, load_camera
from perception.errors import PerceptionError
from perception.frames import read_image

CAMERAS = Path(__file__).resolve().parents[1] / "perception" / "cameras"
GROUND = np.array([[6.0, 1.5], [12.0, -2.0], [25.0, 0.5], [40.0, 3.0]])  # road points ahead


def test_same_size_is_the_camera_itself():
    camera = load_camera(CAMERAS / "bdd100k_1280x720.yaml")
    assert fit_to_frame(camera, 1280, 720) is camera
    kitti = load_camera(CAMERAS / "kitti_1242x375.yaml")  # crop 0, 0: its own size is itself
    assert kitti.crop == (0, 0) and fit_to_frame(kitti, 1242, 375) is kitti


def test_scaled_to_the_same_aspect_ratio():
    """The chessboard camera (1280x720) fits the 960x540 Udacity frames: K x 0.75, and a road
    point lands on the same spot of the picture, 0.75 times the pixel."""
    camera = load_camera(CAMERAS / "udacity_1280x720.yaml")
    small = fit_to_frame(camera, 960, 540)
    assert (small.width, small.height) == (960, 540)
    np.testing.assert_allclose(small.K[:2], camera.K[:2] * 0.75)
    np.testing.assert_array_equal(small.dist, camera.dist)  # distortion is per normalised ray
    big_px, _ = camera.ground_to_pixel(GROUND)
    small_px, _ = small.ground_to_pixel(GROUND)
    np.testing.assert_allclose(small_px, big_px * 0.75, atol=1e-6)
    assert fit_to_frame(camera, 960, 540) is small  # cached: the BEV maps are per camera object
    assert fit_to_frame(camera, 640, 360) is not small


def test_crop_moves_the_principal_point():
    """A frame cut at (x, y) from the camera's image sees every road point (x, y) pixels up and
    left of where the whole image has it; focal lengths, distortion and mount are unchanged."""
    camera = replace(load_camera(CAMERAS / "udacity_1280x720.yaml"), crop=(100, 60))
    cut = fit_to_frame(camera, 1000, 600)
    np.testing.assert_allclose(cut.K[:2, 2], camera.K[:2, 2] - [100, 60])
    assert cut.K[0, 0] == camera.K[0, 0] and cut.mount == camera.mount
    whole_px, _ = camera.ground_to_pixel(GROUND)
    cut_px, _ = cut.ground_to_pixel(GROUND)
    np.testing.assert_allclose(cut_px, whole_px - [100, 60], atol=1e-6)
    assert fit_to_frame(camera, 1000, 600) is cut


def test_kitti_camera_fits_the_cropped_kitti_frames(drives):
    """MANIFEST 5.4: 1224x370 top-left crops of 1242x375 frames. The shipped KITTI camera says
    crop 0, 0; a camera without a crop gets it from --camera-crop 0,0."""
    frames = sorted((drives / "labeled" / "kitti_object_cropped" / "image_2").glob("*.png"))
    assert frames
    height, width = read_image(frames[0]).shape[:2]
    assert (width, height) == (1224, 370)
    kitti = load_camera(CAMERAS / "kitti_1242x375.yaml")
    fitted = fit_to_frame(kitti, width, height)
    np.testing.assert_array_equal(fitted.K, kitti.K)  # a crop at 0, 0 keeps K as it is
    uncropped = replace(kitti, crop=None)
    with_option = planning_camera(plan_args("--plan", "--camera",
                                            str(CAMERAS / "kitti_1242x375.yaml"),
                                            "--camera-crop", "0,0"))
    assert with_option.crop == (0, 0)
    np.testing.assert_array_equal(fit_to_frame(with_option, width, height).K, kitti.K)
    # Without a crop the 1224x370 frame is within 1% of 1242x375's aspect ratio: it is taken
    # as the image scaled (focal lengths 1.4% shorter), hence the crop in the shipped file.
    assert fit_to_frame(uncropped, width, height).K[0, 0] == pytest.approx(
        kitti.K[0, 0] * width / 1242)


def test_hood_follows_the_fit():
    camera = load_camera(CAMERAS / "bdd100k_1280x720.yaml")
    assert fit_to_frame(camera, 640, 360).hood.tolist() == (camera.hood / 2).tolist()
    cut = fit_to_frame(replace(camera, crop=(0, 200)), 1280, 400)
    np.testing.assert_allclose(cut.hood, camera.hood - [0, 200])


@pytest.mark.parametrize("crop, size, message", [
    (None, (640, 480), "a 640x480 frame does not fit the camera's 1280x720 image: another "
                       "aspect ratio"),
    (None, (1300, 720), "a 1300x720 frame does not fit the camera's 1280x720 image"),
    ((0, 0), (1300, 720), "a 1300x720 frame cut from the camera's 1280x720 image at crop (0, 0) "
                          "reaches past its edge"),
    ((200, 100), (1100, 600), "a 1100x600 frame cut from the camera's 1280x720 image at crop "
                              "(200, 100) reaches past its edge"),
    ((700, 0), (500, 720), "at crop (700, 0): principal point (-60, 360) lies outside the "
                           "500x720 image"),
    (None, (0, 0), "a 0x0 frame has no pixels"),
])
def test_what_cannot_be_fitted(crop, size, message):
    camera = replace(load_camera(CAMERAS / "bdd100k_1280x720.yaml"), crop=crop)
    with pytest.raises(CameraError) as error:
        fit_to_frame(camera, *size)
    assert message in str(error.value) and "\n" not in str(error.value)


def plan_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_plan_arguments(parser)
    return parser.parse_args(list(argv))


def test_camera_crop_option_replaces_the_files_crop():
    args = plan_args("--plan", "--camera", str(CAMERAS / "kitti_1242x375.yaml"),
                     "--camera-crop", " 12 ,4")
    assert planning_camera(args).crop == (12, 4)
    assert planning_camera(plan_args("--plan", "--camera",
                                     str(CAMERAS / "kitti_1242x375.yaml"))).crop == (0, 0)


@pytest.mark.parametrize("argv, message", [
    (["--camera-crop", "0,0"], "--camera-crop needs --camera CAMERA.yaml"),
    (["--plan", "--camera-crop", "0,0"], "--camera-crop needs --camera CAMERA.yaml"),
    (["--plan", "--camera", "{camera}", "--camera-crop", "3"],
     "--camera-crop must be X,Y in whole pixels >= 0 (e.g. 0,0), got '3'"),
    (["--plan", "--camera", "{camera}", "--camera-crop=-1,0"], "got '-1,0'"),
    (["--plan", "--camera", "{camera}", "--camera-crop", "1e9,0"], "got '1e9,0'"),
    (["--plan", "--camera", "{camera}", "--camera-crop", "1280,0"],
     "--camera-crop 1280,0 with {camera}: crop (1280, 0) lies outside the 1280x720 image"),
])
def test_camera_crop_option_errors(argv, message):
    camera = str(CAMERAS / "bdd100k_1280x720.yaml")
    with pytest.raises(PerceptionError) as error:
        planning_camera(plan_args(*[a.format(camera=camera) for a in argv]))
    assert message.format(camera=camera) in str(error.value)


def camera_file(tmp_path: Path, **changes: object) -> Path:
    data = yaml.safe_load((CAMERAS / "bdd100k_1280x720.yaml").read_text())
    data.update(changes)
    path = tmp_path / "camera.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("changes, extra, message", [
    ({"crop": {"x": 1280, "y": 0}}, [], "{file}: crop (1280, 0) lies outside the 1280x720 "
                                        "image: frames are cut from it at that top-left corner"),
    ({"hood": [[0, 720], [0, 600], [1400, 600], [1280, 720]]}, [],
     "{file}: hood point [1400, 600] lies outside the 1280x720 image (hood points are the "
     "camera image's pixels)"),
    ({"crop": {"x": 0, "y": 0, "w": 5}}, [],
     "{file}: crop unknown key(s) w (allowed: x, y)"),
    ({"mount": {"x": 1e308, "y": 0, "z": 1.2, "roll": 0, "pitch": 0, "yaw": 0}}, [],
     "{file}: mount.x must be between -50 and 50 m, got 1e+308"),
    ({}, ["--camera-crop", "0,800"], "--camera-crop 0,800 with {file}: crop (0, 800) lies "
                                     "outside the 1280x720 image: frames are cut from it at "
                                     "that top-left corner"),
    ({"crop": {"x": 100, "y": 0}}, [],
     "a 1280x720 frame cut from the camera's 1280x720 image at crop (100, 0) reaches past its "
     "edge (crop x + frame width must be <= 1280, crop y + frame height <= 720)"),
    ({}, ["--camera-crop", "0,0"], None),  # plans: the frame is the camera's whole image
])
def test_run_refuses_bad_camera_files(drives, tmp_path, monkeypatch, capsys, changes, extra,
                                      message):
    """`perception run IMAGE --plan --camera FILE`: one line, exit 2, nothing written."""
    source = drives / "bdd100k_frames" / "yolop" / "7dd9ef45-f197db95.jpg"
    path = camera_file(tmp_path, **changes)
    monkeypatch.setattr(sys, "argv", ["perception"])
    code = cli_main(["run", str(source), "--plan", "--camera", str(path), *extra,
                     "--json", str(tmp_path / "r.jsonl"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    if message is None:
        assert code == 0 and (tmp_path / "r.jsonl").is_file()
        return
    assert (code, err) == (2, "perception: error: " + message.format(file=path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["camera.yaml"]


def test_run_plans_a_cropped_kitti_frame(drives, tmp_path, monkeypatch):
    """End to end: a 1224x370 KITTI crop with the shipped 1242x375 camera plans."""
    source = drives / "labeled" / "kitti_object_cropped" / "image_2" / "000003.png"
    monkeypatch.setattr(sys, "argv", ["perception"])
    code = cli_main(["run", str(source), "--plan", "--camera",
                     str(CAMERAS / "kitti_1242x375.yaml"), "--json", str(tmp_path / "r.jsonl"),
                     "--no-progress"])
    assert code == 0
    result = json.loads((tmp_path / "r.jsonl").read_text())
    assert (result["width"], result["height"]) == (1224, 370) and result["plan"] is not None
