"""`perception run` end to end on real frames, and exit code 2 with one line for bad input."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from perception.cli import main
from perception.zoo.registry import get_spec

REPO = Path(__file__).resolve().parents[1]


def run(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(sys, "argv", ["perception"])
    return main(["run", *argv, "--no-progress"])


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def two_images(tmp_path: Path, drives: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(drives / "bdd100k_frames" / "yolop" / "3c0e7240-96e390d2.jpg", folder / "a.jpg")
    shutil.copy(drives / "kitti_object" / "image_2" / "000001.png", folder / "b.png")
    return folder


def test_folder_to_jsonl_masks_and_images(two_images: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    out.mkdir()
    code = run([str(two_images), "--models", "yolox-nano,twinlitenet", "--json",
                str(out / "r.jsonl"), "--save-masks",
                str(out / "masks"), "--out", str(out / "annotated")], monkeypatch)
    assert code == 0
    assert files_under(out) == ["annotated/a.jpg", "annotated/b.jpg", "masks/a_drivable.png",
                                "masks/a_lanes.png", "masks/b_drivable.png", "masks/b_lanes.png",
                                "r.jsonl"]
    lines = [json.loads(line) for line in (out / "r.jsonl").read_text().splitlines()]
    assert [(r["frame_index"], Path(r["source"]).name, r["width"], r["height"])
            for r in lines] == [(0, "a.jpg", 1280, 720), (1, "b.png", 1242, 375)]
    assert lines[0]["detections"], "a BDD street frame has cars"
    for detection in lines[0]["detections"]:
        assert set(detection) >= {"class_id", "label", "score", "box"}
        x1, y1, x2, y2 = detection["box"]
        assert 0 <= x1 < x2 <= 1280 and 0 <= y1 < y2 <= 720
    assert {"yolox-nano/inference", "twinlitenet/inference", "total"} <= set(
        lines[0]["timings_ms"])
    mask = cv2.imread(str(out / "masks" / "b_drivable.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (375, 1242) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 255} and (mask == 255).mean() > 0.05
    assert cv2.imread(str(out / "annotated" / "a.jpg")).shape == (720, 1280, 3)
    summary = capsys.readouterr().out
    assert "frames/s" in summary and "median ms" in summary and "p99 ms" in summary


def test_video_to_annotated_video(tmp_path: Path, video_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    clip = tmp_path / "clip.avi"
    capture = cv2.VideoCapture(str(video_path))
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 25, (960, 540))
    for _ in range(3):
        writer.write(capture.read()[1])
    writer.release()
    out = tmp_path / "out"
    out.mkdir()
    code = run([str(clip), "--models", "fastestdet,twinlitenet", "--json",
                str(out / "r.jsonl"), "--save-masks", str(out / "m"), "--out",
                str(out / "annotated.mp4")], monkeypatch)
    assert code == 0
    assert files_under(out) == ["annotated.mp4", "m/000000_drivable.png", "m/000000_lanes.png",
                                "m/000001_drivable.png", "m/000001_lanes.png",
                                "m/000002_drivable.png", "m/000002_lanes.png", "r.jsonl"]
    annotated = cv2.VideoCapture(str(out / "annotated.mp4"))
    assert annotated.get(cv2.CAP_PROP_FRAME_COUNT) == 3
    assert annotated.read()[1].shape == (540, 960, 3)
    indices = [json.loads(line)["frame_index"] for line in (out / "r.jsonl").open()]
    assert indices == [0, 1, 2]


def bad_inputs(tmp_path: Path, drives: Path, models_mirror: Path) -> dict[str, list[str]]:
    good = drives / "udacity_lanelines_p1" / "solidWhiteRight.jpg"
    (tmp_path / "zero.jpg").touch()
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:300])
    writer = cv2.VideoWriter(str(tmp_path / "empty.mp4"), cv2.VideoWriter.fourcc(*"mp4v"), 10,
                             (64, 48))
    writer.release()
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07" + b"\x00garbage" * 64)
    spec = json.loads(json.dumps(get_spec("fastestdet").to_dict()))
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(spec | {"file": "broken.onnx",
                                                                 "sha256": ""}))
    return {
        "missing file": [str(tmp_path / "absent.jpg")],
        "zero-byte image": [str(tmp_path / "zero.jpg")],
        "truncated image": [str(tmp_path / "cut.jpg")],
        "video without frames": [str(tmp_path / "empty.mp4")],
        "unknown model": [str(good), "--models", "yolox-nano,not-a-model"],
        "corrupt onnx": [str(good), "--models", str(tmp_path / "broken.yaml")],
        "wrong-checksum onnx": [str(good), "--models", "fastestdet"],  # cache holds a bad copy
    }


CASES = ["missing file", "zero-byte image", "truncated image", "video without frames",
         "unknown model", "corrupt onnx", "wrong-checksum onnx"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exit_2_one_line_no_output(case: str, tmp_path: Path, drives: Path,
                                             models_mirror: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    argv = bad_inputs(inputs, drives, models_mirror)[case]
    if case == "wrong-checksum onnx":
        cache = tmp_path / "cache"
        (cache / "fastestdet").mkdir(parents=True)
        data = bytearray((models_mirror / "fastestdet" / "FastestDet.onnx").read_bytes())
        data[-10] ^= 0xFF
        (cache / "fastestdet" / "FastestDet.onnx").write_bytes(bytes(data))
        monkeypatch.setenv("PERCEPTION_CACHE_DIR", str(cache))
    out = tmp_path / "out"
    out.mkdir()
    code = run([*argv, "--json", str(out / "r.jsonl"), "--save-masks", str(out / "masks"),
                "--out", str(out / "annotated.mp4")], monkeypatch)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("perception: error: "), err
    assert "Traceback" not in err[0]
    assert files_under(out) == []


def test_failure_midway_leaves_no_partial_file(two_images: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    (two_images / "c.jpg").write_bytes((two_images / "a.jpg").read_bytes()[:500])
    out = tmp_path / "out"
    out.mkdir()
    code = run([str(two_images), "--models", "fastestdet", "--json", str(out / "r.jsonl"),
                "--out", str(out / "video.mp4")], monkeypatch)
    assert code == 2
    assert "c.jpg: JPEG header is truncated" in capsys.readouterr().err
    assert files_under(out) == []  # neither the JSONL nor the video, nor a temp file


def test_overlay_draws_masks_and_boxes() -> None:
    from perception.overlay import DRIVABLE_COLOUR, LANE_COLOUR, draw_result
    from perception.results import Detection, FrameResult

    image = np.full((90, 160, 3), 100, np.uint8)
    drivable = np.zeros((36, 64), np.uint8)
    drivable[18:] = 1  # lower half at model resolution
    lanes = np.zeros((36, 64), np.uint8)
    lanes[:, 32] = 1
    result = FrameResult(frame_index=0, source="x", timestamp=0.0, width=160, height=90,
                         detections=[Detection(class_id=2, label="car", score=0.9,
                                               box=(10, 10, 60, 40), category="car")],
                         drivable=drivable, lanes=lanes)
    drawn = draw_result(image, result)
    assert drawn.shape == image.shape and (image == 100).all()  # the frame is not touched
    assert tuple(drawn[5, 150]) == (100, 100, 100)  # outside every mask and box
    blended = (100 * 0.65 + np.array(DRIVABLE_COLOUR) * 0.35).astype(np.uint8)
    assert tuple(drawn[80, 150]) == tuple(blended)
    assert tuple(drawn[80, 81]) == LANE_COLOUR
    assert tuple(drawn[25, 10]) != (100, 100, 100)  # the box's left edge


def test_interrupt_keeps_complete_outputs(drives: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    """Ctrl-C is how a camera run ends: the frames done so far stay written, in full."""
    import perception.commands.run

    still = drives / "udacity_lanelines_p1" / "solidWhiteRight.jpg"

    def camera_then_ctrl_c(spec: str, max_pixels: int):
        from perception.frames import Frame

        image = cv2.imread(str(still))
        for index in range(2):
            yield Frame(image, timestamp=float(index), index=index, source="camera:0",
                        name=f"{index:06d}")
        raise KeyboardInterrupt

    monkeypatch.setattr(perception.commands.run, "open_source", camera_then_ctrl_c)
    out = tmp_path / "out"
    out.mkdir()
    code = run(["0", "--models", "fastestdet", "--json", str(out / "r.jsonl")], monkeypatch)
    assert code == 130
    assert "interrupted after 2 frames" in capsys.readouterr().err
    assert [json.loads(line)["frame_index"] for line in (out / "r.jsonl").open()] == [0, 1]


def test_stills_never_share_planner_state(drives: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder is a set of unrelated stills: the plan of its second image is the plan of that
    image run alone. With --sequence the folder is one drive, and the state carried from the
    first image changes the second plan."""
    frames = drives / "udacity_lanelines_p1"
    folder = tmp_path / "stills"
    folder.mkdir()
    shutil.copy(frames / "solidWhiteRight.jpg", folder / "a.jpg")
    shutil.copy(frames / "solidYellowLeft.jpg", folder / "b.jpg")
    camera = ["--plan", "--camera", str(REPO / "perception" / "cameras" / "udacity_960x540.yaml")]

    def plans(source: Path, *extra: str) -> list[dict]:
        out = tmp_path / f"{source.name}{len(extra)}.jsonl"
        assert run([str(source), *camera, "--json", str(out), *extra], monkeypatch) == 0
        return [json.loads(line)["plan"] for line in out.read_text().splitlines()]

    alone = plans(folder / "b.jpg")
    assert plans(folder)[1] == alone[0]
    assert plans(folder, "--sequence")[1] != alone[0]


def test_sequence_is_for_a_folder(video_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture) -> None:
    assert run([str(video_path), "--sequence"], monkeypatch) == 2
    assert "--sequence is for a folder of images" in capsys.readouterr().err
