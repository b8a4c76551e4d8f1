"""The camera model: intrinsics, lens distortion, image size and where the camera sits on the car.

A camera is a small YAML file that people edit by hand, with exactly these keys:

    width: 960                  # image size in pixels
    height: 540
    K: [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
    dist: [k1, k2, p1, p2, k3]  # OpenCV order; [] or zeros for a rectified image
    mount: {x: 1.5, y: 0.0, z: 1.3, roll: 0.0, pitch: 2.0, yaw: 0.0}

`mount` is the camera's position (metres) and orientation (degrees) in the vehicle frame:
x forward, y left, z up, origin on the ground below the vehicle's reference point (the rear
axle centre in this project). `pitch` > 0 means the camera looks down toward the road, `yaw` > 0
turns it to the left, `roll` > 0 tilts it clockwise as seen from behind (right-hand rule about x).

Geometry: a vehicle-frame point P maps to camera (OpenCV optical: x right, y down, z forward)
coordinates R^T (P - t), where t is the mount position and R = R_mount @ R_OPTICAL; the pixel
then follows from `cv2.projectPoints` with K and dist. A pixel maps back to the flat road (z = 0)
by intersecting its viewing ray with the ground.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import yaml

from perception.errors import PerceptionError

# Columns: the optical axes (x right, y down, z forward) expressed in the vehicle frame.
R_OPTICAL = np.array([[0.0, 0.0, 1.0],
                      [-1.0, 0.0, 0.0],
                      [0.0, -1.0, 0.0]])
KITTI_VELODYNE_HEIGHT_M = 1.73  # KITTI setup: Velodyne 1.73 m, cameras 1.65 m above the road
DIST_LENGTHS = (0, 4, 5, 8, 12, 14)  # the lengths OpenCV accepts
# Undistortion is iterative; OpenCV's default 5 steps leave ~0.02 px in strong image corners.
UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-10)


class CameraError(PerceptionError):
    """A camera file or camera parameters that cannot describe a real forward camera."""


@dataclass(frozen=True)
class Mount:
    """Camera pose on the vehicle: metres and degrees, vehicle frame (x fwd, y left, z up)."""

    x: float = 1.5
    y: float = 0.0
    z: float = 1.4
    roll: float = 0.0
    pitch: float = 0.0
    yaw: float = 0.0

    def rotation(self) -> np.ndarray:
        """R_mount = Rz(yaw) @ Ry(pitch) @ Rx(roll); Ry(+) tips the forward axis down."""
        r, p, y = (math.radians(a) for a in (self.roll, self.pitch, self.yaw))
        rx = np.array([[1, 0, 0], [0, math.cos(r), -math.sin(r)], [0, math.sin(r), math.cos(r)]])
        ry = np.array([[math.cos(p), 0, math.sin(p)], [0, 1, 0], [-math.sin(p), 0, math.cos(p)]])
        rz = np.array([[math.cos(y), -math.sin(y), 0], [math.sin(y), math.cos(y), 0], [0, 0, 1]])
        return rz @ ry @ rx

    @classmethod
    def from_rotation(cls, rotation: np.ndarray, position: np.ndarray) -> Mount:
        """Inverse of `rotation()` (ZYX Euler angles) for a camera-to-vehicle rotation."""
        m = rotation @ R_OPTICAL.T
        pitch = math.degrees(math.asin(float(np.clip(-m[2, 0], -1.0, 1.0))))
        roll = math.degrees(math.atan2(m[2, 1], m[2, 2]))
        yaw = math.degrees(math.atan2(m[1, 0], m[0, 0]))
        x, y, z = (float(v) for v in position)
        return cls(x=x, y=y, z=z, roll=roll, pitch=pitch, yaw=yaw)


@dataclass(frozen=True, eq=False)  # hashed by identity: BEV maps are cached per camera
class CameraModel:
    width: int
    height: int
    K: np.ndarray  # 3x3 float64
    dist: np.ndarray = field(default_factory=lambda: np.zeros(5))  # OpenCV order
    mount: Mount = field(default_factory=Mount)

    def __post_init__(self) -> None:
        object.__setattr__(self, "K", np.asarray(self.K, np.float64))
        object.__setattr__(self, "dist", np.asarray(self.dist, np.float64).reshape(-1))
        validate(self)

    # --- geometry -------------------------------------------------------------------------

    @property
    def rotation(self) -> np.ndarray:
        """Camera (optical) to vehicle rotation."""
        return self.mount.rotation() @ R_OPTICAL

    @property
    def position(self) -> np.ndarray:
        return np.array([self.mount.x, self.mount.y, self.mount.z])

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vehicle-frame points (N, 3) -> pixels (N, 2), and a mask of points in front."""
        points = np.asarray(points, np.float64).reshape(-1, 3)
        in_camera = (points - self.position) @ self.rotation  # = R^T (P - t), row-wise
        in_front = in_camera[:, 2] > 1e-6
        if len(points) == 0:
            return np.zeros((0, 2)), in_front
        pixels, _ = cv2.projectPoints(in_camera.reshape(-1, 1, 3), np.zeros(3), np.zeros(3),
                                      self.K, self.dist)
        return pixels.reshape(-1, 2), in_front

    def pixel_rays(self, pixels: np.ndarray) -> np.ndarray:
        """Pixels (N, 2) -> unit viewing rays (N, 3) in the vehicle frame (distortion removed)."""
        pixels = np.asarray(pixels, np.float64).reshape(-1, 1, 2)
        normalized = cv2.undistortPoints(pixels, self.K, self.dist, None, None, None,
                                         UNDISTORT_CRITERIA).reshape(-1, 2)
        rays = np.column_stack([normalized, np.ones(len(normalized))]) @ self.rotation.T
        return rays / np.linalg.norm(rays, axis=1, keepdims=True)

    def pixel_to_ground(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (N, 2) -> ground points (N, 2) [x, y] and a mask of pixels below the horizon.

        Pixels at or above the horizon never meet the road; their points are NaN.
        """
        rays = self.pixel_rays(pixels)
        below = rays[:, 2] < -1e-9
        scale = np.where(below, -self.mount.z / np.where(below, rays[:, 2], -1.0), np.nan)
        ground = self.position[:2] + rays[:, :2] * scale[:, None]
        return ground, below

    def ground_to_pixel(self, ground: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ground points (N, 2) [x, y] -> pixels (N, 2) and a mask of points in front."""
        ground = np.asarray(ground, np.float64).reshape(-1, 2)
        return self.project(np.column_stack([ground, np.zeros(len(ground))]))

    # --- variants -------------------------------------------------------------------------

    def scaled(self, width: int, height: int) -> CameraModel:
        """The same camera at another resolution (K scaled per axis)."""
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[0] *= sx
        K[1] *= sy
        return replace(self, width=width, height=height, K=K)

    # --- file -----------------------------------------------------------------------------

    def to_dict(self) -> dict:
        m = self.mount
        return {"width": self.width, "height": self.height,
                "K": [[round(float(v), 6) for v in row] for row in self.K],
                "dist": [round(float(v), 8) for v in self.dist],
                "mount": {k: round(float(getattr(m, k)), 6)
                          for k in ("x", "y", "z", "roll", "pitch", "yaw")}}


def validate(camera: CameraModel) -> None:
    """Raise CameraError for values no forward-looking road camera can have."""
    if camera.width <= 0 or camera.height <= 0:
        raise CameraError(f"width and height must be positive, got {camera.width}x{camera.height}")
    if camera.K.shape != (3, 3):
        raise CameraError(f"K must be a 3x3 matrix, got shape {list(camera.K.shape)}")
    if not np.all(np.isfinite(camera.K)) or not np.all(np.isfinite(camera.dist)):
        raise CameraError("K and dist must hold finite numbers")
    fx, fy, cx, cy = camera.K[0, 0], camera.K[1, 1], camera.K[0, 2], camera.K[1, 2]
    if fx <= 0 or fy <= 0:
        raise CameraError(f"focal lengths must be positive, got fx={fx:g}, fy={fy:g}")
    if not np.allclose(camera.K[2], [0, 0, 1]) or camera.K[1, 0] != 0:
        raise CameraError(f"K must look like [[fx, s, cx], [0, fy, cy], [0, 0, 1]], got "
                          f"{camera.K.tolist()}")
    if not (0 <= cx <= camera.width and 0 <= cy <= camera.height):
        raise CameraError(f"principal point ({cx:g}, {cy:g}) lies outside the "
                          f"{camera.width}x{camera.height} image")
    if camera.dist.size not in DIST_LENGTHS:
        raise CameraError(f"dist must have 0, 4, 5, 8, 12 or 14 coefficients (OpenCV order), "
                          f"got {camera.dist.size}")
    m = camera.mount
    if not all(math.isfinite(getattr(m, k)) for k in ("x", "y", "z", "roll", "pitch", "yaw")):
        raise CameraError("mount values must be finite numbers")
    if m.z <= 0:
        raise CameraError(f"mount.z (camera height above the road) must be > 0 m, got {m.z:g}")
    if not -30.0 < m.pitch < 60.0:
        raise CameraError(f"mount.pitch must be between -30 and 60 degrees for a forward camera "
                          f"(> 0 looks down), got {m.pitch:g}")
    if not -45.0 < m.roll < 45.0:
        raise CameraError(f"mount.roll must be between -45 and 45 degrees, got {m.roll:g}")
    if not -180.0 <= m.yaw <= 180.0:
        raise CameraError(f"mount.yaw must be between -180 and 180 degrees, got {m.yaw:g}")


# --- files ------------------------------------------------------------------------------------

def from_dict(data: object, where: str = "camera") -> CameraModel:
    if not isinstance(data, dict):
        raise CameraError(f"{where}: expected a mapping with width, height, K, dist, mount")
    missing = [k for k in ("width", "height", "K", "dist", "mount") if k not in data]
    if missing:
        raise CameraError(f"{where}: missing key(s) {', '.join(missing)}")
    unknown = sorted(set(data) - {"width", "height", "K", "dist", "mount"})
    if unknown:
        raise CameraError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}")
    mount = data["mount"]
    if not isinstance(mount, dict):
        raise CameraError(f"{where}: mount must be a mapping with x, y, z, roll, pitch, yaw")
    mount_missing = [k for k in ("x", "y", "z", "roll", "pitch", "yaw") if k not in mount]
    if mount_missing:
        raise CameraError(f"{where}: mount is missing {', '.join(mount_missing)}")
    width, height = data["width"], data["height"]
    if isinstance(width, bool) or isinstance(height, bool) or not all(
            isinstance(v, int | float) and float(v).is_integer() for v in (width, height)):
        raise CameraError(f"{where}: width and height must be whole numbers, got "
                          f"{width!r} and {height!r}")
    K = _floats(data["K"])
    if K is None or K.shape != (3, 3):
        raise CameraError(f"{where}: K must be a 3x3 list of numbers, got {data['K']!r}")
    dist = _floats(data["dist"] or [])
    if dist is None or dist.ndim != 1:
        raise CameraError(f"{where}: dist must be a flat list of numbers, got {data['dist']!r}")
    mount_values = {}
    for key in ("x", "y", "z", "roll", "pitch", "yaw"):
        value = _floats(mount[key])
        if value is None or value.ndim != 0 or isinstance(mount[key], bool):
            raise CameraError(f"{where}: mount.{key} must be a number, got {mount[key]!r}")
        mount_values[key] = float(value)
    try:
        return CameraModel(int(width), int(height), K, dist, Mount(**mount_values))
    except CameraError as error:
        raise CameraError(f"{where}: {error}") from error


def _floats(value: object) -> np.ndarray | None:
    """`value` as a float64 array; None when it is not numbers (text, ragged lists, None)."""
    if value is None:
        return None
    try:
        return np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None


def load_camera(path: str | Path) -> CameraModel:
    path = Path(path)
    if not path.is_file():
        raise CameraError(f"{path}: no such camera file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise CameraError(f"{path}: not valid YAML ({error})") from error
    return from_dict(data, where=str(path))


def camera_file_text(camera: CameraModel, comment: str = "") -> str:
    """The camera file `load_camera` reads, with `comment` as its header."""
    text = yaml.safe_dump(camera.to_dict(), sort_keys=False, default_flow_style=None)
    return "".join(f"# {line}\n" for line in comment.splitlines()) + text


# --- readers for datasets and the simulator ---------------------------------------------------

def read_kitti_calib(path: str | Path, width: int = 1242, height: int = 375) -> CameraModel:
    """Camera 2 (left colour, `image_2`) of a KITTI `calib/*.txt` file.

    K comes from P2; the mount from R0_rect and Tr_velo_to_cam, taking the Velodyne frame (x fwd,
    y left, z up) as the vehicle frame with its origin on the road, 1.73 m below the Velodyne
    (the KITTI setup puts the cameras 1.65 m above the road). Images are rectified: no distortion.
    """
    path = Path(path)
    if not path.is_file():
        raise CameraError(f"{path}: no such KITTI calib file")
    rows: dict[str, np.ndarray] = {}
    for line in path.read_text().splitlines():
        key, _, values = line.partition(":")
        if values.strip():
            try:
                rows[key.strip()] = np.array(values.split(), dtype=np.float64)
            except ValueError as error:
                raise CameraError(f"{path}: bad numbers on line {key!r}") from error
    for key, size in (("P2", 12), ("R0_rect", 9), ("Tr_velo_to_cam", 12)):
        if key not in rows or rows[key].size != size:
            raise CameraError(f"{path}: needs {key} with {size} numbers "
                              "(a KITTI object calib file)")
    P2 = rows["P2"].reshape(3, 4)
    K = P2[:, :3]
    offset = np.linalg.solve(K, P2[:, 3])  # camera 2 relative to the rectified camera 0
    velo_to_cam = np.eye(4)
    velo_to_cam[:3] = rows["Tr_velo_to_cam"].reshape(3, 4)
    rect = np.eye(4)
    rect[:3, :3] = rows["R0_rect"].reshape(3, 3)
    velo_to_cam2 = rect @ velo_to_cam
    velo_to_cam2[:3, 3] += offset
    rotation = velo_to_cam2[:3, :3].T  # camera 2 optical -> Velodyne
    position = -rotation @ velo_to_cam2[:3, 3] + [0.0, 0.0, KITTI_VELODYNE_HEIGHT_M]
    return CameraModel(width, height, K, np.zeros(5), Mount.from_rotation(rotation, position))


def fov_intrinsics(width: int, height: int, fov_deg: float) -> np.ndarray:
    """K of an ideal pinhole (CARLA's cameras): square pixels, principal point at the image
    centre, f = width / (2 tan(fov / 2)) for the horizontal field of view `fov_deg`."""
    f = width / (2.0 * math.tan(math.radians(fov_deg) / 2.0))
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def carla_camera(width: int, height: int, fov_deg: float, x: float, y: float, z: float,
                 roll: float = 0.0, pitch: float = 0.0, yaw: float = 0.0) -> CameraModel:
    """A CARLA `sensor.camera.rgb` from its attributes and its transform relative to the car.

    CARLA (Unreal) uses x forward, y right, z up, pitch > 0 looking up and yaw > 0 turning right;
    our frame has y left, pitch > 0 looking down and yaw > 0 turning left, so y, pitch and yaw
    change sign. Roll keeps its sign: Unreal's roll > 0 is clockwise seen from behind, as ours.
    CARLA's pinhole has no distortion and a horizontal field of view `fov_deg`; pixels are square.
    """
    if not 0.0 < fov_deg < 180.0:
        raise CameraError(f"CARLA fov must be between 0 and 180 degrees, got {fov_deg:g}")
    return CameraModel(int(width), int(height), fov_intrinsics(width, height, fov_deg), np.zeros(5),
                       Mount(x=x, y=-y, z=z, roll=roll, pitch=-pitch, yaw=-yaw))
