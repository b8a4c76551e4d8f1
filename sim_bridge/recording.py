"""A closed-loop run as MCAP: the replay format, plus the simulator's state and ground truth.

Topics (protobuf Foxglove schemas, JSON where noted):

    /camera/image            foxglove.CompressedImage    the camera frame (JPEG)
    /camera/calibration      foxglove.CameraCalibration  CARLA's pinhole (no distortion)
    /perception/result       JSON                        the FrameResult, with the plan
    /sim/state               JSON                        tick, pose, speed, control, timings
    /ground_truth/drivable   foxglove.CompressedImage    with --ground-truth: PNG mask, 255 = road
    /ground_truth/lanes      foxglove.CompressedImage    PNG mask, 255 = lane marking
    /ground_truth/boxes      JSON                        vehicles and walkers, frame pixels
    /sim/metrics             JSON                        the run's metrics, once at the end

The first three are the topics and schemas of `perception replay` (perception/foxglove_writer.py
on the drive-log branch), so `perception replay LOG.mcap` reads a simulator run like a real drive;
this module writes them with the same libraries until that writer is on main. The file is
written under a temporary name and renamed when the run ends; an error leaves nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from foxglove_schemas_protobuf.CameraCalibration_pb2 import CameraCalibration
from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
from google.protobuf.timestamp_pb2 import Timestamp
from mcap.writer import CompressionType, Writer
from mcap_protobuf.schema import register_schema

from perception.frames import Frame
from perception.results import FrameResult

CAMERA_FRAME = "camera"


class SimRecorder:
    def __init__(self, file: Any) -> None:
        self._mcap = Writer(file, compression=CompressionType.ZSTD)
        self._mcap.start(profile="", library="perception sim")
        self._channels: dict[str, int] = {}
        self.counts: dict[str, int] = {}

    def frame(self, frame: Frame, K: np.ndarray, result: FrameResult | None,
              state: dict, truth: FrameResult | None = None) -> None:
        ns = int(round(frame.timestamp * 1e9))
        stamp = Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)
        self._proto("/camera/calibration", ns, CameraCalibration(
            timestamp=stamp, frame_id=CAMERA_FRAME, width=frame.width, height=frame.height,
            distortion_model="plumb_bob", D=[0.0] * 5, K=K.reshape(-1).tolist(),
            R=[1, 0, 0, 0, 1, 0, 0, 0, 1], P=np.c_[K, np.zeros(3)].reshape(-1).tolist()))
        self._proto("/camera/image", ns, CompressedImage(
            timestamp=stamp, frame_id=CAMERA_FRAME, format="jpeg",
            data=_encode(".jpg", frame.image)))
        if result is not None:
            self._json("/perception/result", ns, result.model_dump(mode="json"))
        self._json("/sim/state", ns, state)
        if truth is not None:
            for which in ("drivable", "lanes"):
                mask = getattr(truth, which)
                if mask is not None:
                    self._proto(f"/ground_truth/{which}", ns, CompressedImage(
                        timestamp=stamp, frame_id=CAMERA_FRAME, format="png",
                        data=_encode(".png", mask * 255)))
            self._json("/ground_truth/boxes", ns, {
                "frame_index": frame.index, "width": frame.width, "height": frame.height,
                "boxes": [d.model_dump(mode="json") for d in truth.detections]})

    def metrics(self, timestamp: float, summary: dict) -> None:
        self._json("/sim/metrics", int(round(timestamp * 1e9)), summary)

    def finish(self) -> None:
        self._mcap.finish()

    def _channel(self, topic: str, encoding: str, schema_id: int) -> int:
        if topic not in self._channels:
            self._channels[topic] = self._mcap.register_channel(topic, encoding, schema_id)
        return self._channels[topic]

    def _proto(self, topic: str, ns: int, message: Any) -> None:
        if topic not in self._channels:
            self._channel(topic, "protobuf", register_schema(self._mcap, type(message)))
        self._add(topic, ns, message.SerializeToString())

    def _json(self, topic: str, ns: int, payload: dict) -> None:
        if topic not in self._channels:
            schema = self._mcap.register_schema(topic.strip("/").replace("/", "."), "jsonschema",
                                                b'{"type": "object"}')
            self._channel(topic, "json", schema)
        self._add(topic, ns, json.dumps(payload).encode())

    def _add(self, topic: str, ns: int, data: bytes) -> None:
        self._mcap.add_message(self._channels[topic], log_time=ns, publish_time=ns, data=data)
        self.counts[topic] = self.counts.get(topic, 0) + 1


def _encode(extension: str, image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(extension, image)
    assert ok, f"OpenCV could not encode {extension}"
    return data.tobytes()


@contextmanager
def recording(path: str | Path | None) -> Iterator[SimRecorder | None]:
    """A recorder on `path`.partial, renamed to `path` when the block ends without error."""
    if path is None:
        yield None
        return
    path = Path(path)
    temp = path.with_name(path.name + ".partial")
    try:
        with open(temp, "wb") as file:
            recorder = SimRecorder(file)
            yield recorder
            recorder.finish()
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
