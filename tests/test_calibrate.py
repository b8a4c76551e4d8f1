"""Chessboard calibration on the real Udacity photos, the command, and undistortion."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from perception.cli import main as cli_main
from perception.commands.calibrate import expand
from perception.driving.calibration import CalibrationError, calibrate
from perception.driving.camera import CameraModel, camera_file_text, load_camera


class Undistorter:
    """Removes the calibrated lens distortion from frames (same size and K): what the
    calibration must make possible."""

    def __init__(self, camera: CameraModel) -> None:
        self.camera = camera
        self.maps = cv2.initUndistortRectifyMap(camera.K, camera.dist, None, camera.K,
                                                (camera.width, camera.height), cv2.CV_16SC2)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if image.shape[:2] != (self.camera.height, self.camera.width):
            raise CalibrationError(f"frame is {image.shape[1]}x{image.shape[0]} but the camera "
                                   f"is {self.camera.width}x{self.camera.height}")
        return cv2.remap(image, *self.maps, cv2.INTER_LINEAR)


@pytest.fixture(scope="module")
def chessboards(drives):
    folder = drives / "udacity_advanced_lane_lines" / "camera_cal"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    return folder


@pytest.fixture(scope="module")
def udacity(chessboards):
    return calibrate(expand([str(chessboards)]), (9, 6))


def test_matches_the_manifest_reference(udacity):
    """MANIFEST 2.3: fx 1156.5, fy 1151.3, cx 671.3, cy 389.2, RMS about 1.0 px, 17 of 20."""
    K = udacity.camera.K
    assert K[0, 0] == pytest.approx(1156.5, abs=3.0)
    assert K[1, 1] == pytest.approx(1151.3, abs=3.0)
    assert K[0, 2] == pytest.approx(671.3, abs=3.0)
    assert K[1, 2] == pytest.approx(389.2, abs=3.0)
    np.testing.assert_allclose(udacity.camera.dist[:2], [-0.247, -0.025], atol=0.01)
    assert 0.5 < udacity.rms < 1.3
    assert (udacity.camera.width, udacity.camera.height) == (1280, 720)
    assert sorted(p.name for p in udacity.skipped) == [
        "calibration1.jpg", "calibration4.jpg", "calibration5.jpg"]
    assert sorted(p.name for p in udacity.resized) == ["calibration15.jpg", "calibration7.jpg"]


def test_undistortion_moves_corners_where_the_model_says(udacity, chessboards):
    """Corners found in the undistorted photo sit where cv2.undistortPoints puts the originals,
    and the board's rows get straighter."""
    from perception.driving.calibration import find_corners
    from perception.frames import read_image

    image = read_image(chessboards / "calibration12.jpg")
    undistorted = Undistorter(udacity.camera)(image)
    assert undistorted.shape == image.shape
    before = find_corners(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (9, 6))
    after = find_corners(cv2.cvtColor(undistorted, cv2.COLOR_BGR2GRAY), (9, 6))
    K, dist = udacity.camera.K, udacity.camera.dist
    expected = cv2.undistortPoints(before, K, dist, P=K)
    assert np.abs(after.reshape(-1, 2) - expected.reshape(-1, 2)).max() < 1.0

    def bend(corners):  # worst distance of a corner from its row's straight line, px
        rows = corners.reshape(6, 9, 2)
        return max(np.abs(np.polyval(np.polyfit(r[:, 0], r[:, 1], 1), r[:, 0]) - r[:, 1]).max()
                   for r in rows)

    assert bend(after) < 0.6 * bend(before)
    # Planning on undistorted frames: the same camera with the same K and no distortion.
    plain = dataclasses.replace(udacity.camera, dist=np.zeros(5))
    np.testing.assert_array_equal(plain.K, K)
    assert not plain.dist.any()
    road = np.array([[12.0, 1.0], [25.0, -2.0]])
    seen, _ = udacity.camera.ground_to_pixel(road)
    expected_plain, _ = plain.ground_to_pixel(road)
    moved = cv2.undistortPoints(seen.reshape(-1, 1, 2), K, dist, P=K).reshape(-1, 2)
    np.testing.assert_allclose(moved, expected_plain, atol=0.05)
    with pytest.raises(CalibrationError, match="frame is 640x360"):
        Undistorter(udacity.camera)(np.zeros((360, 640, 3), np.uint8))


def test_command_writes_camera_file(chessboards, tmp_path, capsys):
    out = tmp_path / "camera.yaml"
    code = cli_main(["calibrate", str(chessboards), "--board", "9x6", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr()
    assert "RMS reprojection error" in printed.out and "skipped: calibration1.jpg" in printed.err
    camera = load_camera(out)
    assert camera.K[0, 0] == pytest.approx(1156.5, abs=3.0)


def test_no_board_found(drives, tmp_path, capsys):
    road = drives / "udacity_lanelines_p1" / "solidWhiteRight.jpg"
    out = tmp_path / "camera.yaml"
    code = cli_main(["calibrate", str(road), "--board", "9x6", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == ("perception: error: no 9x6 chessboard (inner corners) found in any of the 1 "
                   "image(s); check --board and that the whole board is in view")
    assert not out.exists()


def test_bad_arguments(chessboards, tmp_path, capsys):
    out = tmp_path / "camera.yaml"
    assert cli_main(["calibrate", str(chessboards), "--board", "nine", "--out", str(out)]) == 2
    assert "--board must look like 9x6" in capsys.readouterr().err
    assert cli_main(["calibrate", str(chessboards), "--square", "nan", "--out", str(out)]) == 2
    assert "--square must be > 0, got nan" in capsys.readouterr().err
    photo = str(chessboards / "calibration2.jpg")
    assert cli_main(["calibrate", photo, "--out", str(out)]) == 2
    assert "found in only 1 image(s)" in capsys.readouterr().err
    assert cli_main(["calibrate", str(tmp_path / "none.jpg"), "--out", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli_main(["calibrate", str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert "empty: no images in this folder" in capsys.readouterr().err
    assert not out.exists()


# --- from a drive: the mount pitch and height from the lane lines of a video ------------------

UDACITY_CAMERA = Path(__file__).resolve().parents[1] / "perception/cameras/udacity_960x540.yaml"


def with_mount(camera: CameraModel, **mount) -> CameraModel:
    return dataclasses.replace(camera, mount=dataclasses.replace(camera.mount, **mount))


def test_drive_recovers_pitch_and_height_of_the_synthetic_camera():
    """The synthetic road's camera is 1.4 m high, pitched 5 degrees, its lane 3.6 m wide."""
    import math

    from synthetic_road import SIM_CAMERA, Road, RoadCamera, straight_centre

    from perception.driving.calibration import calibrate_from_drive
    from perception.lane_lines import fit_lane_boundaries

    road = RoadCamera(Road(straight_centre(), lanes_left=1))
    frames = [road.observe(2.0 * i, 0.3 * math.sin(i / 3), 0.0, i / 10, i) for i in range(15)]
    boundaries = [fit_lane_boundaries(f.lanes, f.width, f.height) for f in frames]
    wrong = with_mount(SIM_CAMERA, pitch=8.0, z=1.0)
    result = calibrate_from_drive(boundaries, wrong, lane_width_m=3.6)
    assert (result.frames, result.horizon_frames, result.width_frames) == (15, 15, 15)
    assert result.camera.mount.pitch == pytest.approx(5.0, abs=0.2)
    assert result.camera.mount.z == pytest.approx(1.4, abs=0.05)
    assert result.measured_width_m == pytest.approx(3.6 * 1.0 / 1.4, abs=0.1)
    np.testing.assert_array_equal(result.camera.K, SIM_CAMERA.K)
    with pytest.raises(CalibrationError, match=r"found in 9 of 9 frame\(s\); at least 10"):
        calibrate_from_drive(boundaries[:9], wrong, lane_width_m=3.6)
    with pytest.raises(CalibrationError, match="would put the camera 0.1"):
        calibrate_from_drive(boundaries, wrong, lane_width_m=0.3)


def test_command_from_drive_on_udacity_video(video_path, tmp_path, capsys):
    """The shipped Udacity camera made 3 degrees and 0.3 m wrong: the proposal comes back to
    within a degree of its pitch and 0.1 m of its height (3.5 m between the lines' inner edges
    is about 3.65 m between their centres)."""
    shipped = load_camera(UDACITY_CAMERA)
    wrong = with_mount(shipped, pitch=shipped.mount.pitch + 3.0, z=shipped.mount.z + 0.3)
    (tmp_path / "wrong.yaml").write_text(camera_file_text(wrong))
    out = tmp_path / "proposed.yaml"
    code = cli_main(["calibrate", "--from-drive", str(video_path), "--camera",
                     str(tmp_path / "wrong.yaml"), "--every", "3", "--lane-width", "3.65",
                     "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "in 74 of 74 frames" in printed and f"wrote {out}" in printed
    proposed = load_camera(out)
    assert proposed.mount.pitch == pytest.approx(shipped.mount.pitch, abs=1.0)
    assert proposed.mount.z == pytest.approx(shipped.mount.z, abs=0.1)
    np.testing.assert_array_equal(proposed.K, shipped.K)
    assert (proposed.mount.x, proposed.mount.yaw) == (shipped.mount.x, shipped.mount.yaw)
    header = out.read_text().split("width:")[0]
    assert "median of 74 of 74 frames" in header and "1 frame in 3" in header
    assert f"was {wrong.mount.pitch:g}" in header


def test_command_from_drive_without_lanes(chessboards, tmp_path, capsys):
    """A 'drive' of chessboard photos: no lane lines, one line, exit 2, nothing written."""
    video = tmp_path / "boards.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (1280, 720))
    for photo in sorted(chessboards.glob("*.jpg"))[:12]:
        writer.write(cv2.resize(cv2.imread(str(photo)), (1280, 720)))
    writer.release()
    out = tmp_path / "camera.yaml"
    code = cli_main(["calibrate", "--from-drive", str(video), "--camera", str(UDACITY_CAMERA),
                     "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (f"perception: error: {video}: the ego lane's two lines were found in 0 of 12 "
                   "frame(s); at least 10 are needed: give a drive along a road with painted "
                   "lines on both sides of the lane\n")
    assert not out.exists()


def test_command_from_drive_bad_arguments(video_path, chessboards, tmp_path, capsys):
    out = tmp_path / "camera.yaml"
    camera = str(UDACITY_CAMERA)
    cases = [
        (["--from-drive", str(video_path)], "--from-drive needs --camera CAMERA.yaml"),
        (["--from-drive", str(video_path), "--camera", camera, str(chessboards)],
         "give chessboard photos or --from-drive VIDEO, not both"),
        (["--from-drive", str(video_path), "--camera", camera, "--lane-width", "9"],
         "--lane-width must be between 2 and 5.5 m, got 9"),
        (["--from-drive", str(video_path), "--camera", camera, "--every", "0"],
         "--every must be 1 or more, got 0"),
        (["--from-drive", str(tmp_path / "none.mp4"), "--camera", camera],
         "none.mp4: no such file or folder"),
        (["--from-drive", str(video_path), "--camera", str(tmp_path / "none.yaml")],
         "none.yaml: no such camera file"),
        ([str(chessboards), "--camera", camera], "--camera is only used with --from-drive"),
        ([], "give chessboard photos (files or folders), or --from-drive VIDEO --camera"),
    ]
    for arguments, message in cases:
        assert cli_main(["calibrate", *arguments, "--out", str(out)]) == 2, arguments
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, arguments
    assert not out.exists()
