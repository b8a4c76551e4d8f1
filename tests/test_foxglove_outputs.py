"""Distance, in-path road users, lane boundaries, the ego lane and the camera check in the
Foxglove MCAP: written with `foxglove_mcap` on a real BDD100K frame, read back with the mcap
library and its protobuf decoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import pytest
from mcap.reader import make_reader
from mcap_protobuf.decoder import DecoderFactory

from perception.driving.camera import load_camera
from perception.frames import Frame
from perception.logs.foxglove_writer import (
    ANNOTATIONS_TOPIC,
    EGO_BOUNDARY_COLOR,
    IN_PATH_COLOR,
    OTHER_BOUNDARY_COLOR,
    PLAN_TOPIC,
    RESULT_TOPIC,
    foxglove_mcap,
)
from perception.results import (
    CameraCheck,
    Control,
    Detection,
    EgoLane,
    FrameResult,
    LaneBoundary,
    Plan,
)

REPO = Path(__file__).resolve().parents[1]
STILL = "drives/bdd100k_frames/yolop/adb4871d-4d063244.jpg"

CAR = Detection(class_id=2, label="car", score=0.87, box=(560, 380, 720, 480), category="car",
                distance_m=12.3, distance_source="both", in_path=True)
PARKED = Detection(class_id=2, label="car", score=0.64, box=(900, 390, 1100, 500),
                   category="car", distance_m=143.4, distance_source="ground", in_path=False)
LIGHT = Detection(class_id=9, label="traffic light", score=0.5, box=(700, 100, 720, 150),
                  category="traffic_light")
LANES = [
    LaneBoundary(position="ego_left", image_points=[(380.0, 700.0), (600.0, 470.0)],
                 ground_points=[(3.5, 1.8), (20.0, 1.7)]),
    LaneBoundary(position="ego_right", image_points=[(1000.0, 700.0), (700.0, 470.0)],
                 ground_points=[(3.5, -1.9), (20.0, -1.8)]),
    LaneBoundary(position="other", image_points=[(60.0, 700.0), (520.0, 470.0)],
                 ground_points=[(3.5, 5.4), (20.0, 5.3)]),
]
PLAN = Plan(status="degraded", reasons=["camera_mismatch"], waypoints=[(2.0, 0.0), (6.0, 0.1)],
            target_speed_mps=2.5, control=Control(steer=0.0, throttle=0.1, brake=0.0))


def read_back(path: Path) -> dict[str, list]:
    """topic -> decoded messages (protobuf) or parsed JSON, in log order."""
    messages: dict[str, list] = {}
    with open(path, "rb") as file:
        reader = make_reader(file, decoder_factories=[DecoderFactory()])
        for _, channel, message in reader.iter_messages():
            if channel.message_encoding == "json":
                messages.setdefault(channel.topic, []).append(json.loads(message.data))
        file.seek(0)
        reader = make_reader(file, decoder_factories=[DecoderFactory()])
        for _, channel, _, decoded in reader.iter_decoded_messages(
                topics=[ANNOTATIONS_TOPIC, PLAN_TOPIC]):
            messages.setdefault(channel.topic, []).append(decoded)
    return messages


def rgba(color: Any) -> tuple[float, float, float, float]:
    """A Foxglove Color as a tuple: the decoder builds its own message classes from the file."""
    return color.r, color.g, color.b, color.a


@pytest.fixture
def frame(assets: Path) -> Frame:
    return Frame(cv2.imread(str(assets / STILL)), timestamp=2.0, index=0, source=STILL)


def write(path: Path, frame: Frame, *results: FrameResult) -> dict[str, list]:
    camera = load_camera(REPO / "perception/cameras/bdd100k_1280x720.yaml")
    with foxglove_mcap(path, camera) as writer:
        for result in results:
            writer.write(frame, result)
    return read_back(path)


def test_annotations_show_distance_in_path_and_lane_boundaries(frame: Frame,
                                                                tmp_path: Path) -> None:
    result = FrameResult(frame_index=0, source=STILL, timestamp=2.0, width=1280, height=720,
                         detections=[CAR, PARKED, LIGHT], lane_boundaries=LANES, plan=PLAN,
                         ego_lane=EgoLane(width_m=3.6, offset_m=0.15),
                         camera_check=CameraCheck(status="mismatch", pitch_error_deg=2.5,
                                                  horizon_row=300.0, expected_row=360.0))
    messages = write(tmp_path / "out.mcap", frame, result)

    (annotations,) = messages[ANNOTATIONS_TOPIC]
    assert [t.text for t in annotations.texts] == [
        "car 0.87 12.3 m", "car 0.64 143 m", "traffic light 0.50"]
    boxes = [p for p in annotations.points if p.type == p.LINE_LOOP]
    assert [b.thickness for b in boxes] == [4, 2, 2]  # the road user in the path stands out
    assert rgba(boxes[0].outline_color) == rgba(IN_PATH_COLOR) != rgba(boxes[1].outline_color)
    lines = [p for p in annotations.points if p.type == p.LINE_STRIP]
    assert [[(q.x, q.y) for q in line.points] for line in lines] == [
        lane.image_points for lane in LANES]
    assert [rgba(line.outline_color) for line in lines] == [
        rgba(EGO_BOUNDARY_COLOR)] * 2 + [rgba(OTHER_BOUNDARY_COLOR)]
    assert lines[0].thickness > lines[2].thickness

    (scene,) = messages[PLAN_TOPIC]
    plan, lanes = scene.entities
    assert plan.id == "plan" and {m.key: m.value for m in plan.metadata} == {
        "status": "degraded", "target_speed_mps": "2.50", "reasons": "camera_mismatch",
        "camera_check": "mismatch", "camera_pitch_error_deg": "+2.50"}
    assert lanes.id == "lanes" and lanes.frame_id == "base_link"
    assert [[(p.x, p.y, p.z) for p in line.points] for line in lanes.lines] == [
        [(x, y, 0.0) for x, y in lane.ground_points] for lane in LANES]
    assert lanes.lines[0].thickness > lanes.lines[2].thickness
    assert {m.key: m.value for m in lanes.metadata} == {"ego_lane_width_m": "3.60",
                                                         "ego_lane_offset_m": "+0.15"}

    (raw,) = messages[RESULT_TOPIC]
    assert raw == result.model_dump(mode="json")
    assert raw["detections"][0]["distance_source"] == "both"
    assert raw["camera_check"]["expected_row"] == 360.0


def test_lanes_without_a_plan_and_a_result_with_neither(frame: Frame, tmp_path: Path) -> None:
    """Ground lane lines are shown on the road even without a plan; image-only lane lines and
    no plan write no scene at all."""
    lanes_only = FrameResult(frame_index=0, source=STILL, timestamp=2.0, width=1280,
                             height=720, lane_boundaries=LANES[:2])
    image_only = lanes_only.model_copy(update={
        "lane_boundaries": [lane.model_copy(update={"ground_points": None}) for lane in LANES]})
    messages = write(tmp_path / "out.mcap", frame, lanes_only, image_only)
    (scene,) = messages[PLAN_TOPIC]  # the second frame has nothing to put on the road
    assert [e.id for e in scene.entities] == ["lanes"] and len(scene.entities[0].lines) == 2
    assert scene.entities[0].metadata == []  # no ego lane measured
    first, second = messages[ANNOTATIONS_TOPIC]
    assert len([p for p in second.points if p.type == p.LINE_STRIP]) == 3
    assert [r["lane_boundaries"] for r in messages[RESULT_TOPIC]] == [
        [lane.model_dump(mode="json") for lane in r.lane_boundaries]
        for r in (lanes_only, image_only)]
