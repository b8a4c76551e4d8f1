"""`perception record` and `perception replay` end to end on the real video, with the real
models: the output MCAP read back with the `mcap` library, JSONL, video, paced playback, and
damaged or wrong input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from mcap.reader import make_reader

from perception.cli import main as cli
from perception.frames import CorruptRecordError
from perception.logs.sources import open_log
from perception.results import FrameResult

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def drive(video_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 2 s (50 frames) of the real video, recorded with `perception record`."""
    out = tmp_path_factory.mktemp("drive") / "drive.mcap"
    assert cli(["record", "--video", str(video_path), "--out", str(out), "--duration", "2"]) == 0
    return out


TEACHERS = ["--models", "yolox-nano,twinlitenet"]  # the zoo pair, not the default


def read_mcap(path: Path) -> tuple[dict[str, str], dict[str, list]]:
    """(topic -> schema name, topic -> list of messages) with the mcap library."""
    schemas: dict[str, str] = {}
    messages: dict[str, list] = {}
    with open(path, "rb") as file:
        reader = make_reader(file)
        summary = reader.get_summary()
        assert summary is not None, "a finished MCAP has a summary"
        for channel in summary.channels.values():
            schemas[channel.topic] = summary.schemas[channel.schema_id].name
        for _, channel, message in reader.iter_messages():
            messages.setdefault(channel.topic, []).append(message)
    return schemas, messages


def assert_foxglove_ready(path: Path) -> None:
    """What Foxglove needs to show the file with no setup: each schema once, with its
    descriptor; images, calibration and overlay in the camera frame that /tf places on the
    vehicle frame, where the plan is; every header stamp equal to its message's log time."""
    from mcap_protobuf.decoder import DecoderFactory

    with open(path, "rb") as file:
        reader = make_reader(file, decoder_factories=[DecoderFactory()])
        summary = reader.get_summary()
        names = [schema.name for schema in summary.schemas.values()]
        assert len(names) == len(set(names)), names
        frames: dict[str, set[str]] = {}
        for _, channel, message, decoded in reader.iter_decoded_messages(
                topics=[t for t in TOPIC_FRAMES if t != "/perception/result"]):
            if channel.topic == "/tf":
                frames.setdefault("/tf", set()).add(
                    f"{decoded.parent_frame_id}>{decoded.child_frame_id}")
                stamps = [decoded.timestamp]
            elif channel.topic == "/perception/plan":
                frames.setdefault(channel.topic, set()).update(e.frame_id for e in decoded.entities)
                stamps = [e.timestamp for e in decoded.entities]
            elif channel.topic == "/perception/annotations":
                stamps = [a.timestamp for a in [*decoded.points, *decoded.texts]]
            else:
                frames.setdefault(channel.topic, set()).add(decoded.frame_id)
                stamps = [decoded.timestamp]
            assert {s.seconds * 10**9 + s.nanos for s in stamps} <= {message.log_time}
    for topic, frame_ids in frames.items():
        assert frame_ids == {TOPIC_FRAMES[topic]}, topic


TOPIC_FRAMES = {"/camera/image": "camera", "/camera/calibration": "camera",
                "/perception/overlay": "camera", "/perception/annotations": "",
                "/tf": "base_link>camera", "/perception/plan": "base_link",
                "/perception/result": ""}


def test_recorded_log_holds_images_and_calibration(drive):
    schemas, messages = read_mcap(drive)
    assert schemas["/camera/image"] == "foxglove.CompressedImage"
    assert schemas["/camera/calibration"] == "foxglove.CameraCalibration"
    assert len(messages["/camera/image"]) == 50
    assert messages["/camera/image"][1].log_time == 40_000_000  # the video's own clock


def test_replay_round_trip_to_foxglove_mcap_jsonl_and_video(drive, tmp_path, capsys):
    out, jsonl, video = tmp_path / "out.mcap", tmp_path / "out.jsonl", tmp_path / "out.mp4"
    code = cli(["replay", str(drive), *TEACHERS, "--max", "--end", "0.4", "--out", str(out),
                "--json", str(jsonl), "--video", str(video)])
    assert code == 0
    table = capsys.readouterr().err
    assert "frames read" in table and "twinlitenet/inference" in table and "p99" in table

    schemas, messages = read_mcap(out)
    assert schemas == {
        "/camera/image": "foxglove.CompressedImage",
        "/camera/calibration": "foxglove.CameraCalibration",
        "/tf": "foxglove.FrameTransform",
        "/perception/annotations": "foxglove.ImageAnnotations",
        "/perception/overlay": "foxglove.CompressedImage",
        "/perception/result": "perception.FrameResult",
    }
    assert {topic: len(m) for topic, m in messages.items()} == {topic: 10 for topic in schemas}

    lines = jsonl.read_text().splitlines()
    assert len(lines) == 10
    results = [FrameResult.model_validate_json(line) for line in lines]
    from_mcap = [json.loads(m.data) for m in messages["/perception/result"]]
    assert [r.model_dump(mode="json") for r in results] == from_mcap
    assert [r.timestamp for r in results] == pytest.approx([i * 0.04 for i in range(10)])
    assert any(r.detections for r in results), "the Udacity clip has cars in view"

    assert_foxglove_ready(out)

    from foxglove_schemas_protobuf.ImageAnnotations_pb2 import ImageAnnotations
    first = ImageAnnotations.FromString(messages["/perception/annotations"][0].data)
    boxes = [p for p in first.points if p.type == p.LINE_LOOP]
    lanes = [p for p in first.points if p.type == p.POINTS]
    assert len(boxes) == len(first.texts) == len(results[0].detections)
    assert len(lanes) == 1 and len(lanes[0].points) > 10

    capture = cv2.VideoCapture(str(video))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
    assert capture.read()[1].shape == (540, 960, 3)
    capture.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "out.mcap", "out.mp4"]


def test_paced_replay_drops_frames_and_counts_deadline_misses(drive, tmp_path, capsys):
    """Both models take far longer than the 40 ms between frames: newest wins."""
    jsonl = tmp_path / "paced.jsonl"
    assert cli(["replay", str(drive), *TEACHERS, "--rate", "1", "--end", "1",
                "--json", str(jsonl)]) == 0
    counts = dict(line.rsplit(None, 1) for line in capsys.readouterr().err.splitlines()[:5])
    read, processed, dropped = (int(counts[k]) for k in ("frames read", "processed", "dropped"))
    assert read == 25 and processed + dropped == read
    assert dropped > 0 and int(counts["deadline misses"]) > 0
    indices = [json.loads(line)["frame_index"] for line in jsonl.read_text().splitlines()]
    assert len(indices) == processed and indices == sorted(indices)


def test_truncated_log_processes_the_frames_before_the_cut_and_exits_3(drive, tmp_path, capsys):
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(drive.read_bytes()[: drive.stat().st_size * 2 // 3])
    out = tmp_path / "out.mcap"
    code = cli(["replay", str(cut), "--models", "yolox-nano", "--out", str(out)])
    assert code == 3
    error = capsys.readouterr().err
    assert "stopped early" in error and "byte offset" in error and "/camera/image" in error
    readable = 0
    with pytest.raises(CorruptRecordError):
        for _ in open_log(cut):
            readable += 1
    _, messages = read_mcap(out)
    assert 10 < readable < 50
    assert len(messages["/perception/result"]) == readable  # every frame before the cut


def test_unknown_topic_exits_2_listing_topics_and_writes_nothing(drive, tmp_path, capsys):
    out = tmp_path / "out.mcap"
    assert cli(["replay", str(drive), "--topic", "/front", "--out", str(out)]) == 2
    assert "image topics: /camera/image" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_kitti_calibration_reaches_the_output(drives, tmp_path):
    out = tmp_path / "kitti.mcap"
    assert cli(["replay", str(drives / "kitti_object"), "--models", "yolox-nano",
                "--out", str(out)]) == 0
    from foxglove_schemas_protobuf.CameraCalibration_pb2 import CameraCalibration
    _, messages = read_mcap(out)
    calibration = CameraCalibration.FromString(messages["/camera/calibration"][1].data)
    assert calibration.K[0] == pytest.approx(721.5377) and calibration.width == 1242


def test_killed_run_leaves_nothing_under_the_final_name(drive, tmp_path):
    out = tmp_path / "out.mcap"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "perception", "replay", str(drive),
                                "--rate", "0.5", "--models", "yolox-nano", "--out", str(out)],
                               env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.partial-*.mcap")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list(tmp_path.glob(".out.partial-*.mcap")), "killed while writing"
    assert not out.exists()


def test_loop_until_ctrl_c_keeps_the_outputs(drive, tmp_path):
    """--loop plays the log again and again with times that keep increasing; Ctrl-C ends it
    with exit 0 and finished outputs."""
    jsonl = tmp_path / "loop.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "perception", "replay", str(drive),
                                "--end", "0.2", "--loop", "--max", "--models", "yolox-nano",
                                "--json", str(jsonl)], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".loop.partial-*.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2.0)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    stamps = [json.loads(line)["timestamp"] for line in jsonl.read_text().splitlines()]
    assert len(stamps) > 10  # more than one pass over the 5 frames
    assert stamps == sorted(stamps) and stamps[-1] > 0.2
    assert "processed" in stderr


def test_plan_becomes_a_foxglove_scene_in_the_vehicle_frame(drive, tmp_path):
    from foxglove_schemas_protobuf.FrameTransform_pb2 import FrameTransform
    from foxglove_schemas_protobuf.SceneUpdate_pb2 import SceneUpdate

    out, jsonl = tmp_path / "plan.mcap", tmp_path / "plan.jsonl"
    camera = REPO / "perception" / "cameras" / "udacity_960x540.yaml"
    assert cli(["replay", str(drive), *TEACHERS, "--end", "0.2", "--plan", "--camera", str(camera),
                "--out", str(out), "--json", str(jsonl)]) == 0
    schemas, messages = read_mcap(out)
    assert schemas["/perception/plan"] == "foxglove.SceneUpdate"
    plans = [json.loads(line)["plan"] for line in jsonl.read_text().splitlines()]
    assert len(messages["/perception/plan"]) == len(plans) == 5
    for message, plan in zip(messages["/perception/plan"], plans, strict=True):
        entity = SceneUpdate.FromString(message.data).entities[0]
        assert entity.frame_id == "base_link"
        points = [coordinate for p in entity.lines[0].points for coordinate in (p.x, p.y)]
        assert points == pytest.approx([c for waypoint in plan["waypoints"] for c in waypoint])
        assert len(entity.cubes) == len(plan["obstacles"])
        assert {kv.key: kv.value for kv in entity.metadata}["status"] == plan["status"]
    assert any(plan["status"] == "ok" and plan["waypoints"] for plan in plans)
    assert_foxglove_ready(out)
    mount = FrameTransform.FromString(messages["/tf"][0].data)
    assert (mount.parent_frame_id, mount.child_frame_id) == ("base_link", "camera")
    assert [mount.translation.x, mount.translation.z] == pytest.approx([1.5, 1.2])


def test_paced_plan_stops_safely_when_perception_falls_behind(drive, tmp_path):
    """At 10x speed every result is older (on the log clock) than the planner's deadline."""
    jsonl = tmp_path / "fast.jsonl"
    camera = REPO / "perception" / "cameras" / "udacity_960x540.yaml"
    assert cli(["replay", str(drive), *TEACHERS, "--rate", "10", "--plan", "--camera", str(camera),
                "--json", str(jsonl)]) == 0
    plans = [json.loads(line)["plan"] for line in jsonl.read_text().splitlines()]
    assert plans and all(p["status"] == "safe_stop" for p in plans)
    assert all("stale" in " ".join(p["reasons"]) for p in plans)


def test_image_that_does_not_decode_stops_there_with_exit_3(video_path, tmp_path, capsys):
    from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
    from mcap_protobuf.writer import Writer as ProtobufWriter

    log = tmp_path / "bad_jpeg.mcap"
    capture = cv2.VideoCapture(str(video_path))
    with open(log, "wb") as file:
        writer = ProtobufWriter(file)
        for i in range(5):
            data = cv2.imencode(".jpg", capture.read()[1])[1].tobytes()
            if i == 3:
                data = data[:200]  # a JPEG cut short
            writer.write_message("/front/image", CompressedImage(format="jpeg", data=data),
                                 log_time=i * 100_000_000, publish_time=i * 100_000_000)
        writer.finish()
    capture.release()
    jsonl = tmp_path / "out.jsonl"
    assert cli(["replay", str(log), "--models", "yolox-nano", "--json", str(jsonl)]) == 3
    error = capsys.readouterr().err
    assert "/front/image message 3 at log time 0.300000 s" in error and "decoded" in error
    assert len(jsonl.read_text().splitlines()) == 3


@pytest.mark.parametrize("command", [
    ["replay", "{empty}", "--models", "yolox-nano", "--out", "{out}"],
    ["record", "--video", "{empty}", "--out", "{out}"],
])
def test_video_without_frames_exits_2_and_writes_nothing(command, tmp_path, capsys):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"\x00" * 1000)
    out = tmp_path / "out.mcap"
    assert cli([arg.format(empty=empty, out=out) for arg in command]) == 2
    assert "empty.mp4" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.mp4"]


def test_record_wants_an_mcap_name(video_path, tmp_path, capsys):
    assert cli(["record", "--video", str(video_path), "--out", str(tmp_path / "log.mp4")]) == 2
    assert "ends in .mcap" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_output_in_a_missing_folder_exits_2_before_any_work(drive, tmp_path, capsys):
    assert cli(["replay", str(drive), "--out", str(tmp_path / "no" / "out.mcap")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_folder_with_an_image_that_does_not_decode_exits_3_with_the_frames_before(
        video_path, tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    capture = cv2.VideoCapture(str(video_path))
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:02d}.jpg"), capture.read()[1])
    capture.release()
    (folder / "03.jpg").write_bytes(b"not a jpeg")
    jsonl = tmp_path / "out.jsonl"
    assert cli(["replay", str(folder), "--models", "yolox-nano", "--json", str(jsonl)]) == 3
    assert "03.jpg is not a JPEG, PNG, BMP, WebP or TIFF image" in capsys.readouterr().err
    assert len(jsonl.read_text().splitlines()) == 3


def test_outputs_that_would_overwrite_the_log_are_refused(drive, tmp_path, capsys):
    before = drive.read_bytes()
    assert cli(["replay", str(drive), "--out", str(drive)]) == 2
    assert "would overwrite this log" in capsys.readouterr().err
    assert cli(["replay", str(drive), "--json", str(tmp_path / "a"), "--video",
                str(tmp_path / "a")]) == 2
    assert "share a file name" in capsys.readouterr().err
    assert cli(["replay", str(drive), str(drive.with_name("other.mcap")), "--out-dir",
                str(drive.parent)]) == 2
    assert "would overwrite this log" in capsys.readouterr().err
    assert drive.read_bytes() == before


def test_camera_mount_quaternion_round_trips():
    """The /tf rotation for real mounts and the 180-degree turns where naive formulas flip."""
    import numpy as np

    from perception.driving.camera import R_OPTICAL, Mount
    from perception.logs.foxglove_writer import quaternion

    def matrix(q) -> np.ndarray:
        x, y, z, w = q.x, q.y, q.z, q.w
        return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                         [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                         [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])

    turns = [2 * np.outer(n, n) - np.eye(3) for n in (np.array([1, -1, 0]) / np.sqrt(2),
                                                      np.array([0.0, 0.0, 1.0]))]
    mounts = [Mount(pitch=p, yaw=y, roll=r).rotation() @ R_OPTICAL
              for p, y, r in [(0, 0, 0), (8, -3, 1), (-30, 170, 180), (90, 0, 0)]]
    for rotation in [np.eye(3), *turns, *mounts]:
        assert matrix(quaternion(rotation)) == pytest.approx(rotation, abs=1e-7)
