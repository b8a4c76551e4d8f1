"""Frames and results as ROS 2 messages in an MCAP file: the ROS 2 profile (CDR messages,
`ros2msg` schemas holding each type's full message definition), as `ros2 bag record` writes
with its mcap storage, so that `ros2 bag play` and Foxglove read it with no setup.

    /camera/image/compressed    sensor_msgs/msg/CompressedImage   the camera frame (JPEG, or
                                                                  the log's own)
    /camera/camera_info         sensor_msgs/msg/CameraInfo        intrinsics (nominal if none)
    /perception/detections      vision_msgs/msg/Detection2DArray  one Detection2D per box: centre
                                                                  and size in pixels, one
                                                                  hypothesis (class id, score)
    /perception/drivable_mask   sensor_msgs/msg/Image             mono8, 255 = drivable area
    /perception/lane_mask       sensor_msgs/msg/Image             mono8, 255 = lane marking
    /perception/path            nav_msgs/msg/Path                 the plan's waypoints (base_link)
    /tf                         tf2_msgs/msg/TFMessage            base_link -> camera mount
    /perception/result          std_msgs/msg/String               the FrameResult JSON (labels,
                                                                  distances, lanes, the plan)

The class id of a hypothesis is the model's class index as text ("2"); its name, with
everything else vision_msgs has no field for, is in /perception/result. The masks are at the
frame's size. Header stamps and log times are the frame's own timestamp; frames as in
mount.py. Messages are built and serialized with rosbags' ROS 2 Humble type store (no ROS
install); vision_msgs, which it lacks, is registered from its 4.x (Humble) definitions below.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from mcap.writer import CompressionType, Writer

from perception.driving.camera import CameraModel
from perception.frames import Frame
from perception.logs.files import atomic_output
from perception.logs.foxglove_writer import jpeg
from perception.logs.mount import CAMERA_FRAME, VEHICLE_FRAME, CameraMount, log_time_ns
from perception.results import FrameResult

IMAGE_TOPIC = "/camera/image/compressed"
CAMERA_INFO_TOPIC = "/camera/camera_info"
DETECTIONS_TOPIC = "/perception/detections"
MASK_TOPICS = {"drivable": "/perception/drivable_mask", "lanes": "/perception/lane_mask"}
PATH_TOPIC = "/perception/path"
TF_TOPIC = "/tf"
RESULT_TOPIC = "/perception/result"

# vision_msgs 4.x, the version of ROS 2 Humble and later (comments left out).
VISION_MSGS = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose":
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n",
    "vision_msgs/msg/Detection2D": "std_msgs/Header header\n"
                                   "vision_msgs/ObjectHypothesisWithPose[] results\n"
                                   "vision_msgs/BoundingBox2D bbox\nstring id\n",
    "vision_msgs/msg/Detection2DArray":
        "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
}


@cache
def ros2_types() -> Any:
    """rosbags' ROS 2 Humble type store with vision_msgs added (built once)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    for name, text in VISION_MSGS.items():
        store.register(get_types_from_msg(text, name))
    return store


class Ros2Writer:
    """Writes one message per topic per frame (masks and path when the result has them);
    `finish()` writes the index and summary."""

    def __init__(self, file: BinaryIO, mount: CameraMount | None = None) -> None:
        self.mount = mount or CameraMount()
        self.counts: dict[str, int] = {}  # messages written per topic
        self._types = ros2_types()
        self._mcap = Writer(file, compression=CompressionType.LZ4)
        self._mcap.start(profile="ros2", library="perception")
        self._schemas: dict[str, int] = {}  # type name -> schema id
        self._channels: dict[str, int] = {}  # topic -> channel id

    def write(self, frame: Frame, result: FrameResult | None = None) -> None:
        """The frame, its calibration and camera mount; with a result, everything else too."""
        ns = log_time_ns(frame.timestamp)
        camera = self._header(ns, CAMERA_FRAME)
        self._write(CAMERA_INFO_TOPIC, ns, self._camera_info(frame, camera))
        compressed = frame.meta.get("compressed")
        image_format, data = compressed if compressed else ("jpeg", jpeg(frame.image))
        self._write(IMAGE_TOPIC, ns, self._msg("sensor_msgs/msg/CompressedImage", header=camera,
                                                format=image_format,
                                                data=np.frombuffer(data, np.uint8)))
        self._write(TF_TOPIC, ns, self._mount_transform(ns))
        if result is None:
            return
        self._write(DETECTIONS_TOPIC, ns, self._detections(result, camera))
        for which, topic in MASK_TOPICS.items():
            mask = result.mask_at_frame_size(which)
            if mask is not None:
                self._write(topic, ns, self._mono8(mask, camera))
        if result.plan is not None:
            self._write(PATH_TOPIC, ns, self._path(result.plan.waypoints,
                                                   self._header(ns, VEHICLE_FRAME)))
        self._write(RESULT_TOPIC, ns, self._msg("std_msgs/msg/String",
                                                data=result.model_dump_json()))

    def finish(self) -> None:
        self._mcap.finish()

    def _write(self, topic: str, log_time: int, message: Any) -> None:
        kind = message.__msgtype__
        if topic not in self._channels:
            if kind not in self._schemas:  # the full definition, dependencies after a MSG: line
                definition, _ = self._types.generate_msgdef(kind, ros_version=2)
                self._schemas[kind] = self._mcap.register_schema(kind, "ros2msg",
                                                                 definition.encode())
            self._channels[topic] = self._mcap.register_channel(topic, "cdr",
                                                                self._schemas[kind])
        data = bytes(self._types.serialize_cdr(message, kind))
        self._mcap.add_message(self._channels[topic], log_time=log_time, publish_time=log_time,
                               data=data)
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def _msg(self, kind: str, **fields: Any) -> Any:
        return self._types.types[kind](**fields)

    def _header(self, ns: int, frame_id: str) -> Any:
        stamp = self._msg("builtin_interfaces/msg/Time", sec=ns // 1_000_000_000,
                          nanosec=ns % 1_000_000_000)
        return self._msg("std_msgs/msg/Header", stamp=stamp, frame_id=frame_id)

    def _camera_info(self, frame: Frame, header: Any) -> Any:
        info = self.mount.camera_info(frame)
        roi = self._msg("sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0,
                        width=0, do_rectify=False)
        return self._msg("sensor_msgs/msg/CameraInfo", header=header, height=info.height,
                         width=info.width, distortion_model=info.distortion_model,
                         d=np.asarray(info.D, np.float64), k=np.asarray(info.K, np.float64),
                         r=np.eye(3).ravel(), p=np.asarray(info.P, np.float64), binning_x=0,
                         binning_y=0, roi=roi)

    def _mount_transform(self, ns: int) -> Any:
        x, y, z = self.mount.position
        qx, qy, qz, qw = self.mount.quaternion()
        transform = self._msg(
            "geometry_msgs/msg/Transform",
            translation=self._msg("geometry_msgs/msg/Vector3", x=x, y=y, z=z),
            rotation=self._msg("geometry_msgs/msg/Quaternion", x=qx, y=qy, z=qz, w=qw))
        stamped = self._msg("geometry_msgs/msg/TransformStamped",
                            header=self._header(ns, VEHICLE_FRAME), child_frame_id=CAMERA_FRAME,
                            transform=transform)
        return self._msg("tf2_msgs/msg/TFMessage", transforms=[stamped])

    def _detections(self, result: FrameResult, header: Any) -> Any:
        detections = []
        for detection in result.detections:
            x1, y1, x2, y2 = detection.box
            centre = self._msg("vision_msgs/msg/Pose2D", theta=0.0, position=self._msg(
                "vision_msgs/msg/Point2D", x=(x1 + x2) / 2, y=(y1 + y2) / 2))
            hypothesis = self._msg("vision_msgs/msg/ObjectHypothesisWithPose",
                                   hypothesis=self._msg("vision_msgs/msg/ObjectHypothesis",
                                                        class_id=str(detection.class_id),
                                                        score=float(detection.score)),
                                   pose=self._unknown_pose())
            detections.append(self._msg(
                "vision_msgs/msg/Detection2D", header=header, results=[hypothesis], id="",
                bbox=self._msg("vision_msgs/msg/BoundingBox2D", center=centre,
                               size_x=float(x2 - x1), size_y=float(y2 - y1))))
        return self._msg("vision_msgs/msg/Detection2DArray", header=header,
                         detections=detections)

    def _unknown_pose(self) -> Any:
        """A 2D detection has no 6D pose: identity, with zero covariance."""
        pose = self._msg("geometry_msgs/msg/Pose",
                         position=self._msg("geometry_msgs/msg/Point", x=0.0, y=0.0, z=0.0),
                         orientation=self._msg("geometry_msgs/msg/Quaternion", x=0.0, y=0.0,
                                               z=0.0, w=1.0))
        return self._msg("geometry_msgs/msg/PoseWithCovariance", pose=pose,
                         covariance=np.zeros(36))

    def _mono8(self, mask: np.ndarray, header: Any) -> Any:
        height, width = mask.shape
        pixels = (np.asarray(mask, np.uint8) * 255).ravel()
        return self._msg("sensor_msgs/msg/Image", header=header, height=height, width=width,
                         encoding="mono8", is_bigendian=0, step=width, data=pixels)

    def _path(self, waypoints: list[tuple[float, float]], header: Any) -> Any:
        poses = []
        for x, y in waypoints:
            pose = self._msg(
                "geometry_msgs/msg/Pose",
                position=self._msg("geometry_msgs/msg/Point", x=float(x), y=float(y), z=0.0),
                orientation=self._msg("geometry_msgs/msg/Quaternion", x=0.0, y=0.0, z=0.0,
                                      w=1.0))
            poses.append(self._msg("geometry_msgs/msg/PoseStamped", header=header, pose=pose))
        return self._msg("nav_msgs/msg/Path", header=header, poses=poses)


@contextmanager
def ros2_mcap(path: str | Path, camera: CameraModel | None = None) -> Iterator[Ros2Writer]:
    """A Ros2Writer on a temporary file, finished and moved onto `path` if the block ends
    normally; on an exception nothing is left under `path`. `camera` gives the mount for /tf
    and the calibration for frames without one."""
    with atomic_output(path) as temp, open(temp, "wb") as file:
        writer = Ros2Writer(file, CameraMount.of(camera))
        yield writer
        writer.finish()
