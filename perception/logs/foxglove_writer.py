"""Frames and results as an MCAP file that opens in Foxglove with no setup.

Topics (all protobuf Foxglove schemas, except the raw result in JSON):

    /camera/image            foxglove.CompressedImage     the camera frame (JPEG, or the log's own)
    /camera/calibration      foxglove.CameraCalibration   intrinsics (nominal if the log has none)
    /perception/annotations  foxglove.ImageAnnotations    boxes, labels with distance, lane
                                                          points and fitted lane boundaries
    /perception/overlay      foxglove.CompressedImage     frame with the drivable area tinted
    /perception/plan         foxglove.SceneUpdate         planned path, obstacles and lane
                                                          boundaries on the road (base_link)
    /tf                      foxglove.FrameTransform      base_link -> camera mount
    /perception/result       JSON (jsonschema)            the FrameResult, as `perception run`

Every message is logged at the frame's own timestamp, so the output lines up with the input log.
The image, calibration and overlay are in the `camera` frame, which /tf places on `base_link`,
the plan's frame (mount.py). Open with `foxglove_mcap(path)`, which writes to a temporary file
and renames it on success. `write_protobuf` and `write_json` add topics of one's own (the
simulator does).

`write_frame(sink, mount, frame, result)` builds a frame's messages for any sink with those two
methods: the MCAP file here, the live WebSocket server in foxglove_live.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import cv2
import numpy as np
from foxglove_schemas_protobuf.CameraCalibration_pb2 import CameraCalibration
from foxglove_schemas_protobuf.Color_pb2 import Color
from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
from foxglove_schemas_protobuf.CubePrimitive_pb2 import CubePrimitive
from foxglove_schemas_protobuf.FrameTransform_pb2 import FrameTransform
from foxglove_schemas_protobuf.ImageAnnotations_pb2 import ImageAnnotations
from foxglove_schemas_protobuf.KeyValuePair_pb2 import KeyValuePair
from foxglove_schemas_protobuf.LinePrimitive_pb2 import LinePrimitive
from foxglove_schemas_protobuf.Point2_pb2 import Point2
from foxglove_schemas_protobuf.Point3_pb2 import Point3
from foxglove_schemas_protobuf.PointsAnnotation_pb2 import PointsAnnotation
from foxglove_schemas_protobuf.Pose_pb2 import Pose
from foxglove_schemas_protobuf.Quaternion_pb2 import Quaternion
from foxglove_schemas_protobuf.SceneEntity_pb2 import SceneEntity
from foxglove_schemas_protobuf.SceneUpdate_pb2 import SceneUpdate
from foxglove_schemas_protobuf.TextAnnotation_pb2 import TextAnnotation
from foxglove_schemas_protobuf.Vector3_pb2 import Vector3
from google.protobuf.timestamp_pb2 import Timestamp
from mcap.writer import CompressionType, Writer
from mcap_protobuf.schema import register_schema

from perception.driving.camera import CameraModel
from perception.frames import Frame
from perception.logs.camera_info import CameraInfo
from perception.logs.files import atomic_output
from perception.logs.mount import (
    CAMERA_FRAME,
    VEHICLE_FRAME,
    CameraMount,
    log_time_ns,
    rotation_quaternion,
)
from perception.logs.mount import camera_info_of_model as camera_info_of_model  # the sim's
from perception.overlay import detection_text, draw_result
from perception.results import FrameResult, LaneBoundary, Plan

IMAGE_TOPIC = "/camera/image"
CALIBRATION_TOPIC = "/camera/calibration"
ANNOTATIONS_TOPIC = "/perception/annotations"
OVERLAY_TOPIC = "/perception/overlay"
PLAN_TOPIC = "/perception/plan"
TF_TOPIC = "/tf"
RESULT_TOPIC = "/perception/result"

RESULT_SCHEMA = json.dumps(FrameResult.model_json_schema(mode="serialization"))
RESULT_SCHEMA_NAME = "perception.FrameResult"
# The message type of each protobuf topic of `write_frame` (the result is JSON).
PROTOBUF_TOPICS = {CALIBRATION_TOPIC: CameraCalibration, IMAGE_TOPIC: CompressedImage,
                   TF_TOPIC: FrameTransform, ANNOTATIONS_TOPIC: ImageAnnotations,
                   OVERLAY_TOPIC: CompressedImage, PLAN_TOPIC: SceneUpdate}

BOX_COLOR = Color(r=1.0, g=0.63, b=0.0, a=1.0)
IN_PATH_COLOR = Color(r=1.0, g=0.16, b=0.0, a=1.0)  # a road user in the ego path, thicker box
LANE_COLOR = Color(r=1.0, g=0.0, b=0.0, a=1.0)
EGO_BOUNDARY_COLOR = Color(r=0.0, g=1.0, b=1.0, a=1.0)  # the ego lane's left and right lines
OTHER_BOUNDARY_COLOR = Color(r=0.9, g=0.9, b=0.9, a=1.0)
WHITE = Color(r=1.0, g=1.0, b=1.0, a=1.0)
LABEL_BACKGROUND = Color(r=0.0, g=0.0, b=0.0, a=0.6)
PLAN_COLORS = {"ok": Color(r=0.1, g=0.9, b=0.2, a=1.0),
               "degraded": Color(r=1.0, g=0.7, b=0.0, a=1.0),
               "safe_stop": Color(r=1.0, g=0.1, b=0.1, a=1.0)}
OBSTACLE_COLOR = Color(r=0.9, g=0.3, b=0.1, a=0.7)
LANE_POINT_STEP = 8  # sample the lane mask every 8 px in x and y
JPEG_QUALITY = 85
ANY_JSON = '{"type": "object"}'


class FoxgloveSink(Protocol):
    """Where Foxglove messages go: an MCAP file (FoxgloveWriter) or a live server."""

    def write_protobuf(self, topic: str, log_time: int, message: Any) -> None: ...

    def write_json(self, topic: str, log_time: int, payload: Any, schema_name: str | None = None,
                   schema: str = ANY_JSON) -> None: ...


def write_frame(sink: FoxgloveSink, mount: CameraMount, frame: Frame,
                result: FrameResult | None = None) -> None:
    """The frame, its calibration and camera mount; with a result, everything else too."""
    ns = log_time_ns(frame.timestamp)
    stamp = Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)
    sink.write_protobuf(CALIBRATION_TOPIC, ns, calibration(mount.camera_info(frame), stamp))
    sink.write_protobuf(IMAGE_TOPIC, ns, camera_image(frame, stamp))  # after its calibration
    x, y, z = mount.position
    sink.write_protobuf(TF_TOPIC, ns, FrameTransform(
        timestamp=stamp, parent_frame_id=VEHICLE_FRAME, child_frame_id=CAMERA_FRAME,
        translation=Vector3(x=x, y=y, z=z), rotation=quaternion(mount.rotation)))
    if result is None:
        return
    sink.write_protobuf(ANNOTATIONS_TOPIC, ns, annotations(result, stamp))
    if result.drivable is not None or result.lanes is not None:
        masks_only = result.model_copy(update={"detections": []})  # boxes: annotations
        sink.write_protobuf(OVERLAY_TOPIC, ns, CompressedImage(
            timestamp=stamp, frame_id=CAMERA_FRAME, format="jpeg",
            data=jpeg(draw_result(frame.image, masks_only))))
    road = scene(result, stamp)
    if road.entities:
        sink.write_protobuf(PLAN_TOPIC, ns, road)
    sink.write_json(RESULT_TOPIC, ns, result.model_dump(mode="json"),
                    schema_name=RESULT_SCHEMA_NAME, schema=RESULT_SCHEMA)


class FoxgloveWriter:
    """Writes one message per topic per frame; `finish()` writes the index and summary."""

    def __init__(self, file: BinaryIO, camera_position: tuple[float, float, float] | None = None,
                 camera_rotation: np.ndarray | None = None,
                 default_camera_info: CameraInfo | None = None) -> None:
        """`camera_position` (m) and `camera_rotation` (optical -> vehicle) place the camera on
        the car for /tf (else a nominal mount); `default_camera_info` is written for frames
        without a calibration of their own (else a nominal pinhole)."""
        nominal = CameraMount()
        self.mount = CameraMount(
            nominal.position if camera_position is None else camera_position,
            nominal.rotation if camera_rotation is None else camera_rotation, default_camera_info)
        self.counts: dict[str, int] = {}  # messages written per topic
        self._mcap = Writer(file, compression=CompressionType.LZ4)  # JPEGs gain little from zstd
        self._mcap.start(profile="", library="perception")
        self._schemas: dict[str, int] = {}  # schema name -> id
        self._channels: dict[str, int] = {}  # topic -> channel id

    def write(self, frame: Frame, result: FrameResult | None = None) -> None:
        """The frame, its calibration and camera mount; with a result, everything else too."""
        write_frame(self, self.mount, frame, result)

    def write_protobuf(self, topic: str, log_time: int, message: Any) -> None:
        """A protobuf message (a Foxglove schema) on `topic` at `log_time` ns."""
        if topic not in self._channels:
            name = message.DESCRIPTOR.full_name
            if name not in self._schemas:  # one schema per type, shared by its topics
                self._schemas[name] = register_schema(self._mcap, type(message))
            self._channels[topic] = self._mcap.register_channel(topic, "protobuf",
                                                                self._schemas[name])
        self._add(topic, log_time, message.SerializeToString())

    def write_json(self, topic: str, log_time: int, payload: Any, schema_name: str | None = None,
                   schema: str = ANY_JSON) -> None:
        """A JSON value on `topic` at `log_time` ns. The topic's first message registers its JSON
        schema, named `schema_name` (default: the topic with dots, /sim/state -> sim.state)."""
        if topic not in self._channels:
            schema_id = self._mcap.register_schema(
                schema_name or topic.strip("/").replace("/", "."), "jsonschema", schema.encode())
            self._channels[topic] = self._mcap.register_channel(topic, "json", schema_id)
        self._add(topic, log_time, json.dumps(payload, separators=(",", ":")).encode())

    def finish(self) -> None:
        self._mcap.finish()

    def _add(self, topic: str, log_time: int, data: bytes) -> None:
        self._mcap.add_message(self._channels[topic], log_time=log_time, publish_time=log_time,
                               data=data)
        self.counts[topic] = self.counts.get(topic, 0) + 1


@contextmanager
def foxglove_mcap(path: str | Path, camera: CameraModel | None = None
                  ) -> Iterator[FoxgloveWriter]:
    """A FoxgloveWriter on a temporary file, finished and moved onto `path` if the block ends
    normally; on an exception nothing is left under `path`. `camera` (perception/driving/camera.py)
    gives the mount for /tf and the calibration for frames without one."""
    mount = CameraMount.of(camera)
    with atomic_output(path) as temp, open(temp, "wb") as file:
        writer = FoxgloveWriter(file, mount.position, mount.rotation, mount.default_info)
        yield writer
        writer.finish()


def jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert ok, "OpenCV failed to encode a JPEG"
    return data.tobytes()


def camera_image(frame: Frame, stamp: Timestamp) -> CompressedImage:
    """The log's own JPEG/PNG bytes when it had them, else the frame encoded as JPEG."""
    compressed = frame.meta.get("compressed")
    image_format, data = compressed if compressed else ("jpeg", jpeg(frame.image))
    return CompressedImage(timestamp=stamp, frame_id=CAMERA_FRAME, format=image_format,
                           data=data)


def calibration(info: CameraInfo, stamp: Timestamp) -> CameraCalibration:
    return CameraCalibration(timestamp=stamp, frame_id=CAMERA_FRAME, width=info.width,
                             height=info.height, distortion_model=info.distortion_model,
                             D=info.D, K=info.K, R=[1, 0, 0, 0, 1, 0, 0, 0, 1], P=info.P)


def annotations(result: FrameResult, stamp: Timestamp) -> ImageAnnotations:
    """A closed box and a 'label score distance' text per detection (road users in the ego path
    thicker, red); lane pixels as points; each fitted lane boundary as a line strip (the ego
    lane's bold cyan, others thin white)."""
    message = ImageAnnotations()
    for detection in result.detections:
        x1, y1, x2, y2 = detection.box
        message.points.append(PointsAnnotation(
            timestamp=stamp, type=PointsAnnotation.LINE_LOOP,
            thickness=4 if detection.in_path else 2,
            outline_color=IN_PATH_COLOR if detection.in_path else BOX_COLOR,
            points=[Point2(x=x1, y=y1), Point2(x=x2, y=y1), Point2(x=x2, y=y2),
                    Point2(x=x1, y=y2)]))
        message.texts.append(TextAnnotation(
            timestamp=stamp, position=Point2(x=x1, y=y1), font_size=14, text_color=WHITE,
            background_color=LABEL_BACKGROUND, text=detection_text(detection)))
    for boundary in result.lane_boundaries:
        ego = boundary.position != "other"
        message.points.append(PointsAnnotation(
            timestamp=stamp, type=PointsAnnotation.LINE_STRIP, thickness=4 if ego else 2,
            outline_color=EGO_BOUNDARY_COLOR if ego else OTHER_BOUNDARY_COLOR,
            points=[Point2(x=u, y=v) for u, v in boundary.image_points]))
    lanes = result.mask_at_frame_size("lanes")
    if lanes is not None:
        ys, xs = np.nonzero(lanes[::LANE_POINT_STEP, ::LANE_POINT_STEP])
        if len(xs):
            message.points.append(PointsAnnotation(
                timestamp=stamp, type=PointsAnnotation.POINTS, thickness=3,
                outline_color=LANE_COLOR,
                points=[Point2(x=float(x), y=float(y)) for x, y in
                        zip(xs * LANE_POINT_STEP, ys * LANE_POINT_STEP, strict=True)]))
    return message


def scene(result: FrameResult, stamp: Timestamp) -> SceneUpdate:
    """In the vehicle frame: the plan (entity `plan`) and the lane boundaries that have ground
    points (entity `lanes`); no entity for what the result lacks."""
    entities = []
    if result.plan is not None:
        entities.append(plan_entity(result, result.plan, stamp))
    if any(boundary.ground_points for boundary in result.lane_boundaries):
        entities.append(lanes_entity(result, stamp))
    return SceneUpdate(entities=entities)


def plan_entity(result: FrameResult, plan: Plan, stamp: Timestamp) -> SceneEntity:
    """The plan's path as a line and its obstacles as boxes (1.5 m tall, as deep as wide);
    status, target speed, reasons and the camera check as the entity's metadata."""
    path = LinePrimitive(type=LinePrimitive.LINE_STRIP, thickness=0.3,
                         color=PLAN_COLORS[plan.status], pose=Pose(orientation=Quaternion(w=1.0)),
                         points=[Point3(x=x, y=y, z=0.0) for x, y in plan.waypoints])
    cubes = [CubePrimitive(pose=Pose(position=Vector3(x=o.x, y=o.y, z=0.75),
                                     orientation=Quaternion(w=1.0)),
                           size=Vector3(x=o.width, y=o.width, z=1.5), color=OBSTACLE_COLOR)
             for o in plan.obstacles]
    metadata = [KeyValuePair(key="status", value=plan.status),
                KeyValuePair(key="target_speed_mps", value=f"{plan.target_speed_mps:.2f}"),
                KeyValuePair(key="reasons", value="; ".join(plan.reasons))]
    check = result.camera_check
    if check is not None:
        metadata.append(KeyValuePair(key="camera_check", value=check.status))
        if check.pitch_error_deg is not None:
            metadata.append(KeyValuePair(key="camera_pitch_error_deg",
                                         value=f"{check.pitch_error_deg:+.2f}"))
    return SceneEntity(timestamp=stamp, frame_id=VEHICLE_FRAME, id="plan", lines=[path],
                       cubes=cubes, metadata=metadata)


def lanes_entity(result: FrameResult, stamp: Timestamp) -> SceneEntity:
    """Each lane boundary on the road as a line (the ego lane's thicker, cyan); the ego lane's
    width and the car's offset in it as metadata."""
    lines = [lane_line(boundary) for boundary in result.lane_boundaries
             if boundary.ground_points]
    metadata = []
    if result.ego_lane is not None:
        metadata = [KeyValuePair(key="ego_lane_width_m", value=f"{result.ego_lane.width_m:.2f}"),
                    KeyValuePair(key="ego_lane_offset_m",
                                 value=f"{result.ego_lane.offset_m:+.2f}")]
    return SceneEntity(timestamp=stamp, frame_id=VEHICLE_FRAME, id="lanes", lines=lines,
                       metadata=metadata)


def lane_line(boundary: LaneBoundary) -> LinePrimitive:
    ego = boundary.position != "other"
    return LinePrimitive(type=LinePrimitive.LINE_STRIP, thickness=0.15 if ego else 0.08,
                         color=EGO_BOUNDARY_COLOR if ego else OTHER_BOUNDARY_COLOR,
                         pose=Pose(orientation=Quaternion(w=1.0)),
                         points=[Point3(x=x, y=y, z=0.0) for x, y in boundary.ground_points])


def quaternion(rotation: np.ndarray) -> Quaternion:
    x, y, z, w = rotation_quaternion(rotation)
    return Quaternion(x=x, y=y, z=z, w=w)
