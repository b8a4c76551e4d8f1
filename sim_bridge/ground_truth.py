"""CARLA's ground truth as perception output: labels for training, and a perfect perceiver.

A semantic segmentation camera mounted exactly where the RGB camera is gives, per pixel, CARLA's
tag: roads and road lines are the drivable area, road lines are the lane markings. Vehicles and
walkers come from the world's actor list: their 3-D bounding boxes projected through the same
camera, kept when the segmentation shows enough of them (not hidden behind something).

`GroundTruthPerceiver` returns these as a `FrameResult`, the same type our models return, so the
closed loop can be tested with perfect perception (isolating planning and control from the
detectors' recall on a simulator's rendering) and a recorded run becomes labelled data.
"""

from __future__ import annotations

from typing import Any

import carla
import numpy as np

from perception.driving.camera import fov_intrinsics
from perception.frames import Frame
from perception.results import Detection, FrameResult
from sim_bridge.geometry import box_corners, project
from sim_bridge.sensors import image_tags

TAG = carla.CityObjectLabel
DRIVABLE_TAGS = (int(TAG.Roads), int(TAG.RoadLines))
LANE_TAGS = (int(TAG.RoadLines),)
# actor family -> (COCO class id, COCO label, road-user category, segmentation tags)
ACTOR_CLASSES = {
    "vehicle.*": (2, "car", "car", (int(TAG.Car), int(TAG.Truck), int(TAG.Bus),
                                    int(TAG.Motorcycle), int(TAG.Bicycle))),
    "walker.*": (0, "person", "person", (int(TAG.Pedestrians),)),
}
MAX_RANGE_M = 80.0
MIN_VISIBLE = 0.15  # fraction of a box's pixels that must carry the actor's tags


def masks(tags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drivable-area and lane-marking masks (uint8 0/1) from a tag image."""
    drivable = np.isin(tags, DRIVABLE_TAGS).astype(np.uint8)
    lanes = np.isin(tags, LANE_TAGS).astype(np.uint8)
    return drivable, lanes


def actor_boxes(world: Any, camera: Any, tags: np.ndarray | None = None) -> list[Detection]:
    """2-D boxes (frame pixels) of the vehicles and walkers the camera sees."""
    width = int(camera.attributes["image_size_x"])
    height = int(camera.attributes["image_size_y"])
    K = fov_intrinsics(width, height, float(camera.attributes["fov"]))
    pose = camera.get_transform()
    own = camera.parent.id if camera.parent is not None else None
    detections = []
    for pattern, (class_id, label, category, seg_tags) in ACTOR_CLASSES.items():
        for actor in world.get_actors().filter(pattern):
            if actor.id == own or actor.get_location().distance(pose.location) > MAX_RANGE_M:
                continue
            pixels, depth = project(box_corners(actor), pose, K)
            if depth.min() <= 0.5:
                continue
            x1, y1 = np.clip(pixels.min(axis=0), 0, [width, height])
            x2, y2 = np.clip(pixels.max(axis=0), 0, [width, height])
            if x2 - x1 < 2 or y2 - y1 < 2:
                continue
            if tags is not None:
                inside = tags[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))]
                if np.isin(inside, seg_tags).mean() < MIN_VISIBLE:
                    continue
            detections.append(Detection(class_id=class_id, label=label, score=1.0,
                                        box=(float(x1), float(y1), float(x2), float(y2)),
                                        category=category))
    return detections


def labels(frame: Frame, world: Any, camera: Any) -> FrameResult:
    """CARLA's labels of a frame as a result; the loop puts the segmentation image of the same
    simulator frame in `frame.meta["segmentation"]` (None when it did not arrive)."""
    image = frame.meta.get("segmentation")
    tags = image_tags(image) if image is not None else None
    drivable, lanes = masks(tags) if tags is not None else (None, None)
    return FrameResult(frame_index=frame.index, source=frame.source, timestamp=frame.timestamp,
                       width=frame.width, height=frame.height,
                       detections=actor_boxes(world, camera, tags),
                       models=["carla-ground-truth"], drivable=drivable, lanes=lanes)


class GroundTruthPerceiver:
    """`perceive(frame)` from CARLA's labels of the same simulator frame, not from pixels."""

    def __init__(self, world: Any, camera: Any) -> None:
        self.world, self.camera = world, camera

    def __call__(self, frame: Frame) -> FrameResult:
        return labels(frame, self.world, self.camera)
