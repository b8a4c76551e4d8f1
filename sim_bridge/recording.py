"""A closed-loop run as MCAP: the replay format, plus the simulator's state and ground truth.

`SimRecorder` is the drive-log writer (perception/logs/foxglove_writer.py: camera image,
calibration, camera mount, annotations, drivable-area overlay, plan, and the result JSON on
/perception/result), so `perception replay` and Foxglove read a simulator run like a real drive.
It adds:

    /sim/state               JSON                        tick, pose, speed, control, timings
    /ground_truth/drivable   foxglove.CompressedImage    with --ground-truth: PNG mask, 255 = road
    /ground_truth/lanes      foxglove.CompressedImage    PNG mask, 255 = lane marking
    /ground_truth/boxes      JSON                        vehicles and walkers, frame pixels
    /sim/metrics             JSON                        the run's metrics, once at the end

`live_view` publishes the same topics (and /sim/state) live for the Foxglove app.

The file is written under a temporary name and renamed when the run ends; an error leaves
nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
from google.protobuf.timestamp_pb2 import Timestamp

from perception.driving.camera import CameraModel
from perception.frames import Frame
from perception.logs.files import atomic_output
from perception.logs.foxglove_live import FoxgloveAddress, FoxgloveLive, foxglove_live
from perception.logs.foxglove_writer import CAMERA_FRAME, FoxgloveWriter, camera_info_of_model
from perception.results import FrameResult


class SimRecorder(FoxgloveWriter):
    def frame(self, frame: Frame, result: FrameResult | None, state: dict,
              truth: FrameResult | None = None) -> None:
        """One tick: the frame (with the run's camera calibration), our result, the sim state
        and, with ground truth on, CARLA's labels of the frame."""
        self.write(frame, result)
        ns = int(round(frame.timestamp * 1e9))
        stamp = Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)
        self.write_json("/sim/state", ns, state)
        if truth is None:
            return
        for which in ("drivable", "lanes"):
            mask = getattr(truth, which)
            if mask is not None:
                ok, png = cv2.imencode(".png", mask * 255)
                assert ok, "OpenCV could not encode a PNG"
                self.write_protobuf(f"/ground_truth/{which}", ns, CompressedImage(
                    timestamp=stamp, frame_id=CAMERA_FRAME, format="png", data=png.tobytes()))
        self.write_json("/ground_truth/boxes", ns, {
            "frame_index": frame.index, "width": frame.width, "height": frame.height,
            "boxes": [d.model_dump(mode="json") for d in truth.detections]})

    def metrics(self, timestamp: float, summary: dict) -> None:
        self.write_json("/sim/metrics", int(round(timestamp * 1e9)), summary)


@contextmanager
def recording(path: str | Path | None, camera: CameraModel) -> Iterator[SimRecorder | None]:
    """A recorder on a temporary file beside `path`, renamed to `path` if the block succeeds;
    `camera` (CARLA's pinhole on the car) gives /tf and every frame's calibration."""
    if path is None:
        yield None
        return
    with atomic_output(path) as temp, open(temp, "wb") as file:
        recorder = SimRecorder(file, camera_position=tuple(camera.position),
                               camera_rotation=camera.rotation,
                               default_camera_info=camera_info_of_model(camera))
        yield recorder
        recorder.finish()


@contextmanager
def live_view(address: FoxgloveAddress | None, camera: CameraModel
              ) -> Iterator[FoxgloveLive | None]:
    """The run's topics published live for the Foxglove app at `address` (None: not at all);
    a port that cannot be used is a PerceptionError before the first tick."""
    if address is None:
        yield None
        return
    with foxglove_live(address.host, address.port, camera) as live:
        yield live
