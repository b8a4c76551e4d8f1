"""How far away is a road user? Two independent estimates, and what to say when they disagree.

- **ground**: where the bottom edge of the box meets the flat road, cast through the camera
  model. Precise with the right camera file (a few per cent), but it hinges on the camera's
  pitch and height: near the horizon a 1-degree pitch error moves a car at 20 m to 30 m or to
  infinity.
- **size**: the class's typical height (or width, when the box is cut at the top or bottom of
  the frame) and the focal length: d = f * H / h. It needs only the intrinsics, so it survives
  a wrong mount, but a single car's height differs from the typical one by 10-20 %.

Each estimate has a spread (relative standard deviation, in log space): the ground one grows
with distance, since a pixel error at the box bottom or in the pitch matters more near the
horizon (`ground_spread`); the size one is the class's spread (`SIZE_PRIORS`). They disagree
when their ratio exceeds both `DISAGREEMENT_FACTOR` (1.6, or more for classes whose size varies
more, `SizePrior.disagreement_factor`) and `AGREE_SPREADS` combined spreads (far away, where a
few pixels are many metres). Where both exist and agree, the reported distance is their inverse-
variance weighted mean (source `both`). Where they disagree, one of them is wrong, most often
the camera file: the reported distance is the size estimate (it needs no mount) and the plan
says `camera_mismatch`. The planner always places a road user at the nearer of the two
(`nearest_m`): a wrong camera makes us more careful, never less.

Distances are forward distances from the camera (metres along the vehicle's x axis) to where the
road user meets the road, its nearest face.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from perception.driving.camera import CameraModel
from perception.results import Detection


@dataclass(frozen=True)
class SizePrior:
    """Typical size of a road user as a detector boxes it, and the spread of its height."""

    height_m: float
    width_m: float  # across, seen from behind or in front
    length_m: float  # along; the planner's footprint behind the nearest face
    spread: float  # relative standard deviation of the height among such road users
    overhang_m: float  # nearest face to the wheels' contact, which is the box's bottom edge

    @property
    def disagreement_factor(self) -> float:
        """Beyond this ratio the two estimates cannot both be right: `DISAGREEMENT_FACTOR`, or
        2.5 spreads of the class's height for classes as varied as COCO's trucks."""
        return max(DISAGREEMENT_FACTOR, math.exp(2.5 * self.spread))


# Heights of what a COCO detector boxes: a car 1.45-1.75 m (SUVs and vans up to 2 m), a
# truck 2.5-4 m, a bus 3-3.3 m, an adult 1.6-1.8 m standing, a bicycle or motorcycle without its
# rider 1.0-1.3 m (the rider is a separate person box). Widths: EU/US vehicle widths.
# Overhangs: beyond ~4 m the lowest point in the image is where the wheels touch the road, which
# lies behind a vehicle's rear (or front) face by its overhang: ~0.8 m for a car, ~1 m for a
# truck, 2.5 m or more for a bus; a person or a two-wheeler's wheel touches at its nearest face.
SIZE_PRIORS = {  # height, width, length (m)
    "car": SizePrior(1.55, 1.80, 4.5, spread=0.12, overhang_m=0.8),
    "truck": SizePrior(2.80, 2.40, 8.0, spread=0.30, overhang_m=1.0),
    "bus": SizePrior(3.15, 2.55, 12.0, spread=0.10, overhang_m=2.5),
    "motorcycle": SizePrior(1.25, 0.80, 2.2, spread=0.15, overhang_m=0.0),
    "bicycle": SizePrior(1.10, 0.60, 1.8, spread=0.15, overhang_m=0.0),
    "person": SizePrior(1.70, 0.55, 0.6, spread=0.10, overhang_m=0.0),
}
DISAGREEMENT_FACTOR = 1.6  # beyond this ratio the two estimates cannot both be right
DISAGREEMENT_RANGE_M = 80.0  # farther than this (by the nearer estimate) is not judged
CAMERA_SPREAD = 0.10  # relative error of a ground estimate from an imperfect camera file
PIXEL_ERROR = 2.0  # pixels of error in a box edge
PITCH_ERROR_DEG = 0.5  # a good camera file's pitch is still this uncertain (load, road slope)
AGREE_SPREADS = 2.5  # estimates further apart than this many combined spreads disagree
EDGE_PX = 2.0  # a box edge this close to the frame's edge is cut by it
CUT_SPREAD = 0.3  # extra spread of a size estimate from a box cut by the frame's side


@dataclass(frozen=True)
class DistanceEstimate:
    ground_m: float | None  # None: the box bottom is cut by the frame, or above the horizon
    size_m: float | None  # None: no prior for the class, or the box is cut on both axes
    distance_m: float | None  # what is reported
    source: str | None  # "ground", "size", "both"
    disagree: bool  # the two estimates cannot both be right
    above_horizon: bool  # the box bottom never meets the road by the camera file

    @property
    def nearest_m(self) -> float | None:
        """The nearer of the two estimates: what the planner must assume."""
        known = [d for d in (self.ground_m, self.size_m) if d is not None]
        return min(known) if known else None


def ground_distance(box: tuple[float, float, float, float], camera: CameraModel
                    ) -> tuple[float | None, bool]:
    """Forward distance of the box's bottom-centre on the road, and whether it lies at or above
    the horizon. None when the bottom is cut by the frame (the contact is out of view)."""
    x1, _, x2, y2 = box
    if y2 >= camera.height - EDGE_PX:
        return None, False
    ground, below = camera.pixel_to_ground(np.array([[(x1 + x2) / 2, y2]]))
    if not below[0]:
        return None, True
    return float(ground[0, 0]) - camera.mount.x, False


def size_distance(box: tuple[float, float, float, float], prior: SizePrior,
                  camera: CameraModel) -> tuple[float | None, float, bool]:
    """Distance from the box's height (or width when the height is cut), its log spread, and
    whether the box is cut by the frame (part of the road user out of view, where the
    detector's class and box are less sure: such a size is not used to doubt the camera)."""
    x1, y1, x2, y2 = box
    fx, fy = camera.K[0, 0], camera.K[1, 1]
    height_cut = y1 <= EDGE_PX or y2 >= camera.height - EDGE_PX
    width_cut = x1 <= EDGE_PX or x2 >= camera.width - EDGE_PX
    # A box under a pixel tall is taken as one pixel: nearer than it is, the safe side.
    if not height_cut:
        pixels = max(y2 - y1, 1.0)
        spread = math.hypot(prior.spread, PIXEL_ERROR / pixels, CUT_SPREAD if width_cut else 0.0)
        return fy * prior.height_m / pixels, spread, width_cut
    if not width_cut:  # a side view is wider: nearer, the safe side
        pixels = max(x2 - x1, 1.0)
        return fx * prior.width_m / pixels, math.hypot(0.25, PIXEL_ERROR / pixels), True
    return None, math.inf, True


def estimate_distance(det: Detection, camera: CameraModel) -> DistanceEstimate | None:
    """Both estimates for a road user (None for other classes)."""
    prior = SIZE_PRIORS.get(det.category or "")
    if prior is None:
        return None
    ground, above = ground_distance(det.box, camera)
    if ground is not None:  # the wheels' contact -> the nearest face; under the camera at most
        ground = max(0.1, ground - prior.overhang_m)
    size, size_spread, cut = size_distance(det.box, prior, camera)
    if ground is None and size is None:
        return DistanceEstimate(None, None, None, None, False, above)
    if size is None:
        return DistanceEstimate(ground, None, ground, "ground", False, above)
    if ground is None:
        # A road user whose feet lie above the horizon, yet near by its size: the camera file
        # cannot be right (or the road climbs steeply); either way, be careful.
        return DistanceEstimate(None, size, size, "size",
                                above and size < DISAGREEMENT_RANGE_M, above)
    ground_var = ground_spread(min(ground, size), camera) ** 2
    size_var = size_spread**2
    allowed = max(math.log(prior.disagreement_factor),
                  AGREE_SPREADS * math.sqrt(ground_var + size_var))
    if (abs(math.log(ground / size)) > allowed and min(ground, size) < DISAGREEMENT_RANGE_M
            and not cut):
        return DistanceEstimate(ground, size, size, "size", True, False)
    log_mean = (math.log(ground) / ground_var + math.log(size) / size_var) \
        / (1 / ground_var + 1 / size_var)
    return DistanceEstimate(ground, size, math.exp(log_mean), "both", False, False)


def ground_spread(distance_m: float, camera: CameraModel) -> float:
    """Relative spread of a ground estimate at `distance_m`: the camera file's own error, and
    the box bottom's pixel error plus the pitch's uncertainty, which grow with distance
    (d = f z / rows below the horizon, so dd / d = d drows / (f z))."""
    fy = camera.K[1, 1]
    pixels = math.hypot(PIXEL_ERROR, fy * math.tan(math.radians(PITCH_ERROR_DEG)))
    return math.hypot(CAMERA_SPREAD, pixels * distance_m / (fy * camera.mount.z))


def annotate_distances(detections: list[Detection], camera: CameraModel
                       ) -> list[DistanceEstimate | None]:
    """Estimate every detection's distance and write it on the detection (rounded, cm)."""
    estimates = []
    for det in detections:
        est = estimate_distance(det, camera)
        if est is not None and est.distance_m is not None:
            det.distance_m = round(est.distance_m, 2)
            det.distance_source = est.source
        estimates.append(est)
    return estimates
