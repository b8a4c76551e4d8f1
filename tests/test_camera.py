"""Camera model: projection round trips (property-based), the YAML file, dataset readers."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from perception.driving.camera import (
    R_OPTICAL,
    CameraError,
    CameraModel,
    Mount,
    camera_file_text,
    carla_camera,
    load_camera,
    projection_intrinsics,
    read_kitti_calib,
)
from perception.logs.files import write_atomically
from perception.yaml_files import MAX_YAML_BYTES
from tests.synthetic_road import ground_homography


def make_camera(pitch=3.0, roll=0.0, yaw=0.0, z=1.4, dist=(0.0,) * 5) -> CameraModel:
    K = np.array([[900.0, 0, 480], [0, 880.0, 270], [0, 0, 1]])
    return CameraModel(960, 540, K, np.array(dist), Mount(1.5, 0.2, z, roll, pitch, yaw))


mounts = st.fixed_dictionaries({
    "pitch": st.floats(-5, 25), "roll": st.floats(-5, 5), "yaw": st.floats(-10, 10),
    "z": st.floats(0.5, 3.0),
    "dist": st.sampled_from([(0.0,) * 5, (-0.25, 0.05, 0.001, -0.001, 0.0), (0.1, -0.02, 0, 0)]),
})


@settings(max_examples=60, deadline=None)
@given(mounts, st.floats(6.0, 60.0), st.floats(-8.0, 8.0))
def test_ground_point_round_trip(params, x, y):
    camera = make_camera(**params)
    pixels, in_front = camera.ground_to_pixel(np.array([[x, y]]))
    assert in_front.all()
    u, v = pixels[0]
    if not (0 <= u < camera.width and 0 <= v < camera.height):
        return  # outside the image: nothing to invert
    ground, below = camera.pixel_to_ground(pixels)
    assert below.all()
    np.testing.assert_allclose(ground[0], [x, y], atol=1e-4 * max(1.0, x))


@settings(max_examples=60, deadline=None)
@given(mounts, st.floats(0, 959), st.floats(0, 539))
def test_pixel_round_trip(params, u, v):
    camera = make_camera(**params)
    ground, below = camera.pixel_to_ground(np.array([[u, v]]))
    if not below.all() or np.hypot(*ground[0]) > 1e4:
        return  # at or above the horizon
    pixels, in_front = camera.ground_to_pixel(ground)
    assert in_front.all()
    np.testing.assert_allclose(pixels[0], [u, v], atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.floats(-44, 44), st.floats(-29, 59), st.floats(-179, 179))
def test_mount_angles_round_trip(roll, pitch, yaw):
    """`Mount.from_rotation` (used by the KITTI reader) inverts `Mount.rotation`."""
    mount = Mount(1.0, 2.0, 3.0, roll, pitch, yaw)
    back = Mount.from_rotation(mount.rotation() @ R_OPTICAL, np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose([back.roll, back.pitch, back.yaw], [roll, pitch, yaw], atol=1e-9)


def test_geometry_conventions():
    level = make_camera(pitch=0.0)
    # A level camera sees the horizon at the principal row, and the road below it.
    _, below = level.pixel_to_ground(np.array([[480.0, 269.0], [480.0, 271.0]]))
    assert below.tolist() == [False, True]
    # Points to the left (y > 0) appear left of the principal point; farther is higher up.
    pixels, _ = level.ground_to_pixel(np.array([[10.0, 2.0], [20.0, 0.2]]))
    assert pixels[0, 0] < 480 and pixels[1, 1] < pixels[0, 1]
    # Pitching down moves the horizon up in the image.
    pitched = make_camera(pitch=5.0)
    far_level, _ = level.ground_to_pixel(np.array([[100.0, 0.2]]))
    far_pitched, _ = pitched.ground_to_pixel(np.array([[100.0, 0.2]]))
    assert far_pitched[0, 1] < far_level[0, 1]


def test_pixel_and_ground_by_hand():
    """A level camera 1.2 m up at x = 1.5 m, f = 1000 px, centre (640, 360): the road point
    10 m ahead of it and 2 m to the left is at column 640 - 1000 * 2 / 10 = 440 (left of the
    centre) and row 360 + 1000 * 1.2 / 10 = 480 (below the horizon); and back."""
    K = np.array([[1000.0, 0, 640], [0, 1000.0, 360], [0, 0, 1]])
    camera = CameraModel(1280, 720, K, np.zeros(5), Mount(1.5, 0.0, 1.2, 0.0, 0.0, 0.0))
    pixels, _ = camera.ground_to_pixel(np.array([[11.5, 2.0]]))
    np.testing.assert_allclose(pixels, [[440.0, 480.0]], atol=1e-9)
    ground, _ = camera.pixel_to_ground(np.array([[440.0, 480.0]]))
    np.testing.assert_allclose(ground, [[11.5, 2.0]], atol=1e-9)
    # Yawed 10 degrees left, the camera sees a point straight ahead of the car to its right.
    yawed = CameraModel(1280, 720, K, np.zeros(5), Mount(1.5, 0.0, 1.2, 0.0, 0.0, 10.0))
    pixels, _ = yawed.ground_to_pixel(np.array([[21.5, 0.0]]))
    assert pixels[0, 0] == pytest.approx(640 + 1000 * math.tan(math.radians(10)))


def test_homography_matches_projection():
    camera = make_camera(pitch=4.0, roll=1.0, yaw=-2.0)
    points = np.array([[8.0, -1.0], [15.0, 3.0], [40.0, 0.5]])
    pixels, _ = camera.ground_to_pixel(points)
    h = ground_homography(camera) @ np.column_stack([points, np.ones(3)]).T
    np.testing.assert_allclose((h[:2] / h[2]).T, pixels, atol=1e-6)


def test_yaml_round_trip(tmp_path):
    camera = make_camera(pitch=2.5, dist=(-0.2, 0.03, 0.0, 0.0, 0.0))
    path = tmp_path / "camera.yaml"
    write_atomically(path, camera_file_text(camera, comment="test"))
    data = yaml.safe_load(path.read_text())
    assert list(data) == ["width", "height", "K", "dist", "mount"]
    assert list(data["mount"]) == ["x", "y", "z", "roll", "pitch", "yaw"]
    loaded = load_camera(path)
    assert loaded.to_dict() == camera.to_dict()
    assert [p.name for p in tmp_path.iterdir()] == ["camera.yaml"]  # no temp file left
    hooded = CameraModel(960, 540, camera.K, camera.dist, camera.mount, crop=(4, 2),
                         hood=[[0, 540], [0, 480.5], [960, 480.5], [960, 540]])
    write_atomically(path, camera_file_text(hooded))
    assert list(yaml.safe_load(path.read_text()))[-2:] == ["crop", "hood"]
    assert load_camera(path).to_dict() == hooded.to_dict()


def write(tmp_path, **changes):
    data = make_camera().to_dict()
    for key, value in changes.items():
        if key in data["mount"]:
            data["mount"][key] = value
        elif value is None:
            del data[key]
        else:
            data[key] = value
    path = tmp_path / "camera.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("changes, message", [
    ({"K": [[-900.0, 0, 480], [0, 880.0, 270], [0, 0, 1]]}, "focal lengths must be positive"),
    ({"pitch": 90.0}, "mount.pitch must be between -30 and 60"),
    ({"K": [[900.0, 0, 480], [0, 880.0, 270]]}, "K must be a 3x3"),
    ({"dist": [0.1, 0.2, 0.3]}, "dist must have 0, 4, 5, 8, 12 or 14"),
    ({"z": -1.0}, "mount.z"),
    ({"width": 0}, "width and height must be positive"),
    ({"width": 960.5}, "whole numbers"),
    ({"K": [[900.0, 0, 2000], [0, 880.0, 270], [0, 0, 1]]}, "principal point"),
    ({"mount": None}, "missing key(s) mount"),
    ({"K": "nine hundred"}, "K must be a 3x3"),
    ({"yaw": "left"}, "mount.yaw must be a number, got 'left'"),
    ({"pitch": None}, "mount.pitch must be a number, got None"),
    ({"dist": "none"}, "dist must be a flat list of numbers, got 'none'"),
    ({"dist": 5}, "dist must be a flat list of numbers, got 5"),
    ({"height": "tall"}, "width and height must be whole numbers"),
    ({"width": 10**400}, "width and height must be at most 20000 px"),
    ({"width": 1e300}, "width and height must be at most 20000 px"),
    ({"x": 1e308}, "mount.x must be between -50 and 50 m, got 1e+308"),
    ({"y": -60.0}, "mount.y must be between -50 and 50 m, got -60"),
    ({"z": 51.0}, "mount.z (camera height above the road) must be > 0 and <= 50 m, got 51"),
    ({"x": 10**400}, "mount.x must be a number"),
    ({"crop": [0, 0]}, "crop must be a mapping {x: X, y: Y} (pixels), got [0, 0]"),
    ({"crop": {"x": 0}}, "crop is missing y"),
    ({"crop": {"x": 0, "y": 0, "width": 10}}, "crop unknown key(s) width (allowed: x, y)"),
    ({"crop": {"x": 0.5, "y": 0}}, "crop x and y must be whole numbers of pixels"),
    ({"crop": {"x": -1, "y": 0}}, "crop (-1, 0) lies outside the 960x540 image"),
    ({"crop": {"x": 0, "y": 540}}, "crop (0, 540) lies outside the 960x540 image"),
    ({"hood": [[0, 540], [960, 540]]}, "hood must be a list of at least 3 [u, v] points"),
    ({"hood": [[0, 540, 1], [1, 2, 3], [3, 4, 5]]}, "hood must be a list of at least 3"),
    ({"hood": "bottom"}, "hood must be a list of at least 3"),
    ({"hood": [[0, 540], [0, 500], [961, 500]]}, "hood point [961, 500] lies outside the "
                                                 "960x540 image"),
    ({"hood": [[0, 540], [0, -1], [960, 500]]}, "hood point [0, -1] lies outside"),
    ({"hood": [[0, 540], [0, float("nan")], [960, 500]]}, "hood points must be finite numbers"),
])
def test_bad_camera_files(tmp_path, changes, message):
    with pytest.raises(CameraError, match=re.escape(message)):
        load_camera(write(tmp_path, **changes))


def test_unreadable_camera_files(tmp_path):
    with pytest.raises(CameraError, match="no such camera file"):
        load_camera(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("width: [1, 2\n")
    with pytest.raises(CameraError, match="not valid YAML"):
        load_camera(bad)
    bad.write_text("width: 10\nheight: 10\nK: []\ndist: []\nmount: {x: 0}\nfoo: 1\n")
    with pytest.raises(CameraError, match="unknown key"):
        load_camera(bad)


def test_unknown_mount_keys_and_yaml_bombs(tmp_path):
    """Issue 13, item 6: aliases defined under an unknown `mount` key expanded into K; now any
    unknown key is refused, anchors and aliases are refused before anything expands, and the
    file is size-limited."""
    path = write(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["mount"]["extra"] = 1
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CameraError, match=r"mount unknown key\(s\) extra \(allowed: x, y, z, "):
        load_camera(path)
    laughs = "".join(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n"
                     for i in range(1, 12))
    path.write_text("width: 960\nheight: 540\nK: *l11\ndist: []\nmount:\n  l0: &l0 [1]\n"
                    + laughs)
    with pytest.raises(CameraError, match="YAML anchors and aliases are not allowed"):
        load_camera(path)
    path.write_text(camera_file_text(make_camera()) + "#" * MAX_YAML_BYTES)
    with pytest.raises(CameraError, match=f"larger than {MAX_YAML_BYTES} bytes"):
        load_camera(path)


def test_kitti_calib(drives):
    camera = read_kitti_calib(drives / "kitti_object" / "calib" / "000001.txt")
    assert camera.K[0, 0] == pytest.approx(721.5377) and camera.K[1, 2] == pytest.approx(172.854)
    assert camera.mount.z == pytest.approx(1.65, abs=0.02)  # KITTI: cameras 1.65 m up
    assert camera.mount.y == pytest.approx(0.06, abs=0.02)  # camera 2 is 6 cm left of camera 0
    assert abs(camera.mount.pitch) < 2 and abs(camera.mount.roll) < 2 and abs(camera.mount.yaw) < 1
    # A point 20 m ahead on the road lands near the image centre column, below the horizon.
    pixels, _ = camera.ground_to_pixel(np.array([[20.0, camera.mount.y]]))
    assert abs(pixels[0, 0] - camera.K[0, 2]) < 5 and pixels[0, 1] > camera.K[1, 2]


def test_kitti_calib_errors(tmp_path, drives):
    bad = tmp_path / "calib.txt"
    bad.write_text("P0: 1 0 0 0 0 1 0 0 0 0 1 0\n")
    with pytest.raises(CameraError, match="needs P2"):
        read_kitti_calib(bad)
    good = (drives / "kitti_object" / "calib" / "000001.txt").read_text()
    for key, values, message in (
            ("P2", "nan " * 12, "the projection matrix must hold finite numbers"),
            ("P2", "0 " * 12, "focal lengths must be positive"),
            ("P2", "721 0 609 1e400 0 721 172 0 0 0 1 0", "must hold finite numbers"),
            ("P2", "721 0 5000 0 0 721 172 0 0 0 1 0", "principal point"),
            ("R0_rect", "nan " * 9, "mount values must be finite numbers"),
            ("Tr_velo_to_cam", "0 -1 0 0 0 0 -1 0 1 0 0 -1e6", "mount.x must be between")):
        bad.write_text("\n".join(f"{key}: {values}" if line.startswith(f"{key}:") else line
                                 for line in good.splitlines()))
        with pytest.raises(CameraError, match=message) as error:
            read_kitti_calib(bad)
        assert str(error.value).startswith(f"{bad}: ")
    bad.write_bytes(b"\xff\xfe" * 10)
    with pytest.raises(CameraError, match="cannot be read as text"):
        read_kitti_calib(bad)
    with pytest.raises(CameraError, match="12 numbers"):
        projection_intrinsics([1.0, 2.0], 10, 10)


def test_kitti_folder_with_nan_calibration_is_refused(drives, tmp_path, monkeypatch, capsys):
    """Issue 13, item 12: `record --kitti` of an object folder whose P2 is all NaN wrote NaN
    intrinsics and exited 0; it must refuse the frame with one line."""
    from perception.cli import main as cli_main

    (tmp_path / "k" / "image_2").mkdir(parents=True)
    (tmp_path / "k" / "calib").mkdir()
    (tmp_path / "k" / "image_2" / "000001.png").write_bytes(
        (drives / "kitti_object" / "image_2" / "000001.png").read_bytes())
    good = (drives / "kitti_object" / "calib" / "000001.txt").read_text()
    (tmp_path / "k" / "calib" / "000001.txt").write_text("\n".join(
        "P2: " + "nan " * 12 if line.startswith("P2:") else line for line in good.splitlines()))
    monkeypatch.setattr("sys.argv", ["perception"])
    code = cli_main(["record", "--kitti", str(tmp_path / "k"), "--out", str(tmp_path / "o.mcap")])
    assert code != 0 and "finite" in capsys.readouterr().err


def test_carla_camera():
    camera = carla_camera(800, 600, 90.0, x=1.5, y=0.3, z=2.4, pitch=-15.0)
    assert camera.K[0, 0] == pytest.approx(400.0) and camera.K[1, 1] == pytest.approx(400.0)
    assert camera.mount.pitch == 15.0  # CARLA pitch -15 looks down
    assert camera.mount.y == -0.3  # CARLA y is to the right
    # Looking down 15 degrees from 2.4 m: the image centre meets the road ~9 m ahead.
    ground, _ = camera.pixel_to_ground(np.array([[400.0, 300.0]]))
    assert ground[0, 0] == pytest.approx(1.5 + 2.4 / math.tan(math.radians(15)), rel=1e-6)
    with pytest.raises(CameraError, match="fov"):
        carla_camera(800, 600, 0.0, 0, 0, 1)


@pytest.mark.parametrize("pitch, yaw, roll", [(-5.0, 0.0, 0.0), (0.0, 10.0, 0.0),
                                              (0.0, 0.0, 10.0), (-8.0, 7.0, -12.0)])
def test_carla_camera_agrees_with_the_wheels_transform(pitch, yaw, roll):
    """Project through the `carla` wheel's own mount matrix (CARLA's documented pinhole:
    column = cx + f y / x, row = cy - f z / x in the camera's x-forward, y-right, z-up frame)
    and through our model of the same camera: the same pixels, whatever the angles' signs."""
    carla = pytest.importorskip("carla", reason="needs the carla wheel (the [sim] extra)")
    mount = carla.Transform(carla.Location(x=0.8, y=0.3, z=1.5),
                            carla.Rotation(pitch=pitch, yaw=yaw, roll=roll))
    camera = carla_camera(640, 360, 90.0, x=0.8, y=0.3, z=1.5, roll=roll, pitch=pitch, yaw=yaw)
    points = np.array([[10.0, 1.0, 0.0], [15.0, -2.0, 0.5], [8.0, 3.0, -1.0]])  # CARLA: y right
    local = (np.c_[points, np.ones(3)] @ np.array(mount.get_inverse_matrix()).T)[:, :3]
    f, cx, cy = camera.K[0, 0], camera.K[0, 2], camera.K[1, 2]
    theirs = np.column_stack([cx + f * local[:, 1] / local[:, 0],
                              cy - f * local[:, 2] / local[:, 0]])
    ours, in_front = camera.project(points * [1.0, -1.0, 1.0])  # ours: y left
    assert in_front.all()
    np.testing.assert_allclose(ours, theirs, atol=1e-3)
