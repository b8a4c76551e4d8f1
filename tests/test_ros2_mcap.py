"""`perception replay --out x.mcap --profile ros2` on the real video, with the real models and a
plan, read back with two readers that share no code with the writer: mcap-ros2-support's
decoder and the rosbags library (its AnyReader opens the MCAP and builds every type, vision_msgs
included, from the definitions embedded in the file). No ROS 2 installation is used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.highlevel import AnyReader

from perception.cli import main as cli
from perception.driving.camera import load_camera
from perception.logs.sources import open_log

REPO = Path(__file__).resolve().parents[1]
CAMERA = REPO / "perception" / "cameras" / "udacity_960x540.yaml"
TOPICS = {"/camera/image/compressed": "sensor_msgs/msg/CompressedImage",
          "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
          "/perception/detections": "vision_msgs/msg/Detection2DArray",
          "/perception/drivable_mask": "sensor_msgs/msg/Image",
          "/perception/lane_mask": "sensor_msgs/msg/Image",
          "/perception/path": "nav_msgs/msg/Path",
          "/tf": "tf2_msgs/msg/TFMessage",
          "/perception/result": "std_msgs/msg/String"}
FRAMES = 10  # the first 0.4 s of the 25 fps video


@pytest.fixture(scope="module")
def replayed(video_path: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, list[dict]]:
    """(the ROS 2 MCAP, the JSONL results of the same run)."""
    folder = tmp_path_factory.mktemp("ros2")
    out, jsonl = folder / "drive.mcap", folder / "drive.jsonl"
    assert cli(["replay", str(video_path), "--end", "0.4", "--plan", "--camera", str(CAMERA),
                "--out", str(out), "--profile", "ros2", "--json", str(jsonl)]) == 0
    return out, [json.loads(line) for line in jsonl.read_text().splitlines()]


def decoded(path: Path) -> dict[str, list[tuple[int, Any]]]:
    """topic -> [(log time, message)] with mcap-ros2-support's decoder."""
    messages: dict[str, list[tuple[int, Any]]] = {}
    with open(path, "rb") as file:
        reader = make_reader(file, decoder_factories=[DecoderFactory()])
        for _, channel, message, ros in reader.iter_decoded_messages():
            messages.setdefault(channel.topic, []).append((message.log_time, ros))
    return messages


def test_ros2_profile_counts_and_embedded_definitions(replayed: tuple[Path, list[dict]]) -> None:
    out, results = replayed
    assert len(results) == FRAMES
    with open(out, "rb") as file:
        reader = make_reader(file)
        assert reader.get_header().profile == "ros2"
        summary = reader.get_summary()
    assert summary is not None and summary.statistics is not None
    channels = summary.channels.values()
    assert {c.topic: summary.schemas[c.schema_id].name for c in channels} == TOPICS
    assert {c.message_encoding for c in channels} == {"cdr"}
    assert {s.encoding for s in summary.schemas.values()} == {"ros2msg"}
    counts = {summary.channels[channel_id].topic: count
              for channel_id, count in summary.statistics.channel_message_counts.items()}
    assert counts == dict.fromkeys(TOPICS, FRAMES)
    detections = next(s for s in summary.schemas.values() if s.name.startswith("vision_msgs"))
    assert "MSG: vision_msgs/ObjectHypothesis\nstring class_id\nfloat64 score" in \
        detections.data.decode()


def test_one_message_of_each_type_decodes_to_the_run(replayed: tuple[Path, list[dict]]) -> None:
    out, results = replayed
    messages = decoded(out)
    first = results[0]
    stamp_ns = round(first["timestamp"] * 1e9)
    camera = load_camera(CAMERA)

    log_time, image = messages["/camera/image/compressed"][0]
    pixels = cv2.imdecode(np.frombuffer(bytes(image.data), np.uint8), cv2.IMREAD_COLOR)
    assert pixels.shape == (540, 960, 3) and image.format == "jpeg"
    assert image.header.frame_id == "camera" and log_time == stamp_ns
    assert image.header.stamp.sec * 10**9 + image.header.stamp.nanosec == stamp_ns

    _, info = messages["/camera/camera_info"][0]
    assert (info.width, info.height) == (960, 540)
    assert list(info.k) == pytest.approx(camera.K.ravel().tolist())

    for (_, array), result in zip(messages["/perception/detections"], results, strict=True):
        assert len(array.detections) == len(result["detections"])
        for detection, expected in zip(array.detections, result["detections"], strict=True):
            (hypothesis,) = detection.results
            assert hypothesis.hypothesis.class_id == str(expected["class_id"])
            assert hypothesis.hypothesis.score == pytest.approx(expected["score"])
            x1, y1, x2, y2 = expected["box"]
            centre = detection.bbox.center.position
            assert (centre.x, centre.y) == pytest.approx(((x1 + x2) / 2, (y1 + y2) / 2))
            assert (detection.bbox.size_x, detection.bbox.size_y) == pytest.approx(
                (x2 - x1, y2 - y1))
    assert any(array.detections for _, array in messages["/perception/detections"])

    for topic in ("/perception/drivable_mask", "/perception/lane_mask"):
        _, mask = messages[topic][0]
        assert (mask.width, mask.height, mask.encoding, mask.step) == (960, 540, "mono8", 960)
        values = np.frombuffer(bytes(mask.data), np.uint8)
        assert set(np.unique(values)) <= {0, 255} and 0 < np.count_nonzero(values) < values.size

    _, path = messages["/perception/path"][0]
    assert path.header.frame_id == "base_link"
    points = [(p.pose.position.x, p.pose.position.y) for p in path.poses]
    assert np.allclose(points, first["plan"]["waypoints"]) and len(points) > 1

    _, tf = messages["/tf"][0]
    (transform,) = tf.transforms
    assert (transform.header.frame_id, transform.child_frame_id) == ("base_link", "camera")
    t = transform.transform.translation
    assert (t.x, t.y, t.z) == pytest.approx(tuple(camera.position))
    q = transform.transform.rotation
    assert q.x**2 + q.y**2 + q.z**2 + q.w**2 == pytest.approx(1.0)

    _, text = messages["/perception/result"][0]
    assert json.loads(text.data) == first


def test_rosbags_reads_it_from_the_embedded_definitions(replayed: tuple[Path, list[dict]]
                                                        ) -> None:
    out, results = replayed
    with AnyReader([out]) as reader:
        assert {name: topic.msgcount for name, topic in reader.topics.items()} == \
            dict.fromkeys(TOPICS, FRAMES)
        seen: dict[str, Any] = {}
        for connection, _, raw in reader.messages():
            if connection.topic not in seen:
                seen[connection.topic] = reader.deserialize(raw, connection.msgtype)
    array = seen["/perception/detections"]
    assert array.header.frame_id == "camera"
    assert [d.results[0].hypothesis.class_id for d in array.detections] == [
        str(d["class_id"]) for d in results[0]["detections"]]
    assert seen["/perception/drivable_mask"].encoding == "mono8"
    assert len(seen["/perception/path"].poses) == len(results[0]["plan"]["waypoints"])
    assert seen["/tf"].transforms[0].child_frame_id == "camera"


def test_replay_reads_its_own_ros2_output(replayed: tuple[Path, list[dict]]) -> None:
    """The camera topic of the ROS 2 output is a drive log again (the masks are images too,
    so the topic is named)."""
    out, results = replayed
    frames = list(open_log(out, "/camera/image/compressed"))
    assert [frame.timestamp for frame in frames] == pytest.approx(
        [result["timestamp"] for result in results])
    assert frames[0].image.shape == (540, 960, 3)
    assert np.allclose(frames[0].meta["camera_info"].K, load_camera(CAMERA).K.ravel())


def test_ros2_profile_without_out_is_one_line_and_exit_2(video_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    assert cli(["replay", str(video_path), "--profile", "ros2"]) == 2
    assert capsys.readouterr().err.strip() == ("perception: error: --profile ros2 is what "
                                               "--out OUT.mcap holds; give --out")
