"""The camera model: intrinsics, lens distortion, image size and where the camera sits on the car.

A camera is a small YAML file that people edit by hand, with exactly these keys (`crop` and
`hood` optional):

    width: 960                  # the camera's (sensor's) image size in pixels
    height: 540
    K: [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
    dist: [k1, k2, p1, p2, k3]  # OpenCV order; [] or zeros for a rectified image
    mount: {x: 1.5, y: 0.0, z: 1.3, roll: 0.0, pitch: 2.0, yaw: 0.0}
    crop: {x: 0, y: 0}          # frames are cut from the image with this top-left corner
    hood: [[0, 540], [0, 500], [960, 500], [960, 540]]  # our own car, in the image's pixels

`mount` is the camera's position (metres) and orientation (degrees) in the vehicle frame:
x forward, y left, z up, origin on the ground below the vehicle's reference point (the rear
axle centre in this project). `pitch` > 0 means the camera looks down toward the road, `yaw` > 0
turns it to the left, `roll` > 0 tilts it clockwise as seen from behind (right-hand rule about x).

Geometry: a vehicle-frame point P maps to camera (OpenCV optical: x right, y down, z forward)
coordinates R^T (P - t), where t is the mount position and R = R_mount @ R_OPTICAL; the pixel
then follows from `cv2.projectPoints` with K and dist. A pixel maps back to the flat road (z = 0)
by intersecting its viewing ray with the ground.

Frames of another size (`fit_to_frame`, called for every frame; one cached camera per size):
- the file's width x height is the camera's whole image, and K, dist and the hood are in its
  pixels;
- with a crop (x, y) (the file's `crop`, or `--camera-crop X,Y`), a w x h frame is the image's
  pixels [x, x + w) x [y, y + h) at their own scale: the principal point and the hood move by
  (-x, -y); a frame reaching past the image's right or bottom edge cannot be fitted. A crop is
  never combined with scaling: a frame cut out and then resized needs its own camera file;
- without a crop, a frame with the same aspect ratio (within 1%) is the whole image scaled:
  K and the hood scale per axis. Any other size cannot be fitted.
What cannot be fitted is a CameraError naming both sizes (and the crop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import yaml

from perception.errors import PerceptionError
from perception.yaml_files import YamlFileError, read_yaml

# Columns: the optical axes (x right, y down, z forward) expressed in the vehicle frame.
R_OPTICAL = np.array([[0.0, 0.0, 1.0],
                      [-1.0, 0.0, 0.0],
                      [0.0, -1.0, 0.0]])
KITTI_CAMERA_HEIGHT_M = 1.65  # KITTI setup: cameras 1.65 m above the road (Velodyne 1.73 m)
DIST_LENGTHS = (0, 4, 5, 8, 12, 14)  # the lengths OpenCV accepts
# Undistortion is iterative; OpenCV's default 5 steps leave ~0.02 px in strong image corners.
UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-10)
MAX_SIDE_PX = 20_000  # no camera image is larger than this on a side
MAX_MOUNT_M = 50.0  # |mount.x|, |mount.y| and mount.z: a camera on a car, not a satellite
ASPECT_TOLERANCE = 0.01  # a frame this close to the camera's aspect ratio is the image scaled
MOUNT_KEYS = ("x", "y", "z", "roll", "pitch", "yaw")
FILE_KEYS = ("width", "height", "K", "dist", "mount")  # required; `crop` and `hood` optional
MAX_CALIB_BYTES = 64 * 1024  # a KITTI calib file is about 1 KB


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
    crop: tuple[int, int] | None = None  # frames are cut from this image at (x, y)
    hood: np.ndarray | None = None  # (N, 2) polygon of our own car, this image's pixels

    def __post_init__(self) -> None:
        object.__setattr__(self, "K", np.asarray(self.K, np.float64))
        object.__setattr__(self, "dist", np.asarray(self.dist, np.float64).reshape(-1))
        if self.crop is not None:
            object.__setattr__(self, "crop", (int(self.crop[0]), int(self.crop[1])))
        if self.hood is not None:
            object.__setattr__(self, "hood", np.asarray(self.hood, np.float64))
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
        """The same camera at another resolution (K, the hood and the crop scaled per axis)."""
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[0] *= sx
        K[1] *= sy
        hood = None if self.hood is None else self.hood * [sx, sy]
        crop = None if self.crop is None else (round(self.crop[0] * sx),
                                               round(self.crop[1] * sy))
        return replace(self, width=width, height=height, K=K, hood=hood, crop=crop)

    # --- file -----------------------------------------------------------------------------

    def to_dict(self) -> dict:
        m = self.mount
        data = {"width": self.width, "height": self.height,
                "K": [[round(float(v), 6) for v in row] for row in self.K],
                "dist": [round(float(v), 8) for v in self.dist],
                "mount": {k: round(float(getattr(m, k)), 6) for k in MOUNT_KEYS}}
        if self.crop is not None:
            data["crop"] = {"x": self.crop[0], "y": self.crop[1]}
        if self.hood is not None:
            data["hood"] = [[round(float(u), 2), round(float(v), 2)] for u, v in self.hood]
        return data


@lru_cache(maxsize=64)  # cameras hash by identity: the same camera object per camera and size
def fit_to_frame(camera: CameraModel, width: int, height: int) -> CameraModel:
    """The camera for frames of `width` x `height` (see the module docstring): the camera
    itself when they are its whole image, else a cropped or scaled copy, the same object on
    every call (the BEV maps are cached per camera object). CameraError if it cannot fit."""
    crop = camera.crop
    if (width, height) == (camera.width, camera.height) and crop in (None, (0, 0)):
        return camera
    image = f"the camera's {camera.width}x{camera.height} image"
    if crop is not None:
        x, y = crop
        where = f"a {width}x{height} frame cut from {image} at crop ({x}, {y})"
        if x + width > camera.width or y + height > camera.height:
            raise CameraError(f"{where} reaches past its edge (crop x + frame width must be <= "
                              f"{camera.width}, crop y + frame height <= {camera.height})")
        K = camera.K.copy()
        K[0, 2] -= x
        K[1, 2] -= y
        hood = None if camera.hood is None else camera.hood - [x, y]
        try:
            return CameraModel(width, height, K, camera.dist, camera.mount, hood=hood)
        except CameraError as error:
            raise CameraError(f"{where}: {error}") from None
    if width <= 0 or height <= 0:
        raise CameraError(f"a {width}x{height} frame has no pixels")
    if abs(width * camera.height / (height * camera.width) - 1) > ASPECT_TOLERANCE:
        raise CameraError(f"a {width}x{height} frame does not fit {image}: another aspect "
                          "ratio, so it is not the image scaled; if the frames are cut from the "
                          "camera's image, give where (`crop: {x: X, y: Y}` in the camera file "
                          "or --camera-crop X,Y)")
    return camera.scaled(width, height)


def validate(camera: CameraModel) -> None:
    """Raise CameraError for values no forward-looking road camera can have."""
    if camera.width <= 0 or camera.height <= 0:
        raise CameraError(f"width and height must be positive, got {camera.width}x{camera.height}")
    if max(camera.width, camera.height) > MAX_SIDE_PX:
        raise CameraError(f"width and height must be at most {MAX_SIDE_PX} px, got "
                          f"{camera.width}x{camera.height}")
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
    if not all(math.isfinite(getattr(m, k)) for k in MOUNT_KEYS):
        raise CameraError("mount values must be finite numbers")
    if not 0 < m.z <= MAX_MOUNT_M:
        raise CameraError(f"mount.z (camera height above the road) must be > 0 and <= "
                          f"{MAX_MOUNT_M:g} m, got {m.z:g}")
    for key in ("x", "y"):
        if abs(getattr(m, key)) > MAX_MOUNT_M:
            raise CameraError(f"mount.{key} must be between -{MAX_MOUNT_M:g} and "
                              f"{MAX_MOUNT_M:g} m, got {getattr(m, key):g}")
    if not -30.0 < m.pitch < 60.0:
        raise CameraError(f"mount.pitch must be between -30 and 60 degrees for a forward camera "
                          f"(> 0 looks down), got {m.pitch:g}")
    if not -45.0 < m.roll < 45.0:
        raise CameraError(f"mount.roll must be between -45 and 45 degrees, got {m.roll:g}")
    if not -180.0 <= m.yaw <= 180.0:
        raise CameraError(f"mount.yaw must be between -180 and 180 degrees, got {m.yaw:g}")
    if camera.crop is not None:
        x, y = camera.crop
        if not (0 <= x < camera.width and 0 <= y < camera.height):
            raise CameraError(f"crop ({x}, {y}) lies outside the {camera.width}x{camera.height} "
                              "image: frames are cut from it at that top-left corner")
    if camera.hood is not None:
        if camera.hood.ndim != 2 or camera.hood.shape[1] != 2 or len(camera.hood) < 3:
            raise CameraError(f"hood must be a polygon of at least 3 [u, v] points, got shape "
                              f"{list(camera.hood.shape)}")
        if not np.all(np.isfinite(camera.hood)):
            raise CameraError("hood points must be finite numbers")


# --- files ------------------------------------------------------------------------------------

def from_dict(data: object, where: str = "camera") -> CameraModel:
    """A camera from a camera file's parsed YAML; every problem is one CameraError naming
    `where` (unknown keys too, also inside `mount` and `crop`)."""
    if not isinstance(data, dict):
        raise CameraError(f"{where}: expected a mapping with width, height, K, dist, mount")
    _check_keys(data, FILE_KEYS, ("crop", "hood"), where, "")
    mount = data["mount"]
    if not isinstance(mount, dict):
        raise CameraError(f"{where}: mount must be a mapping with x, y, z, roll, pitch, yaw")
    _check_keys(mount, MOUNT_KEYS, (), where, "mount ")
    width, height = _whole(data["width"]), _whole(data["height"])
    if width is None or height is None:
        raise CameraError(f"{where}: width and height must be whole numbers, got "
                          f"{data['width']!r} and {data['height']!r}")
    K = _floats(data["K"])
    if K is None or K.shape != (3, 3):
        raise CameraError(f"{where}: K must be a 3x3 list of numbers, got {data['K']!r}")
    dist = _floats(data["dist"] or [])
    if dist is None or dist.ndim != 1:
        raise CameraError(f"{where}: dist must be a flat list of numbers, got {data['dist']!r}")
    mount_values = {}
    for key in MOUNT_KEYS:
        value = _floats(mount[key])
        if value is None or value.ndim != 0 or isinstance(mount[key], bool):
            raise CameraError(f"{where}: mount.{key} must be a number, got {mount[key]!r}")
        mount_values[key] = float(value)
    crop = None if data.get("crop") is None else _crop(data["crop"], where)
    hood = None if data.get("hood") is None else _hood(data["hood"], width, height, where)
    try:
        return CameraModel(width, height, K, dist, Mount(**mount_values), crop, hood)
    except CameraError as error:
        raise CameraError(f"{where}: {error}") from error


def _check_keys(data: dict, required: tuple[str, ...], optional: tuple[str, ...], where: str,
                what: str) -> None:
    missing = [k for k in required if k not in data]
    if missing:
        text = "is missing" if what else "missing key(s)"
        raise CameraError(f"{where}: {what}{text} {', '.join(missing)}")
    unknown = sorted(map(str, set(data) - set(required) - set(optional)))
    if unknown:
        raise CameraError(f"{where}: {what}unknown key(s) {', '.join(unknown)} (allowed: "
                          f"{', '.join(required + optional)})")


def _crop(crop: object, where: str) -> tuple[int, int]:
    if not isinstance(crop, dict):
        raise CameraError(f"{where}: crop must be a mapping {{x: X, y: Y}} (pixels), got "
                          f"{crop!r}")
    _check_keys(crop, ("x", "y"), (), where, "crop ")
    x, y = _whole(crop["x"]), _whole(crop["y"])
    if x is None or y is None:
        raise CameraError(f"{where}: crop x and y must be whole numbers of pixels, got "
                          f"{crop['x']!r} and {crop['y']!r}")
    return x, y


def _hood(hood: object, width: int, height: int, where: str) -> np.ndarray:
    points = _floats(hood)
    if points is None or points.ndim != 2 or points.shape[1] != 2 or len(points) < 3:
        raise CameraError(f"{where}: hood must be a list of at least 3 [u, v] points (pixels), "
                          f"got {hood!r}")
    if not np.all(np.isfinite(points)):
        raise CameraError(f"{where}: hood points must be finite numbers")
    outside = ~np.all((points >= 0) & (points <= [width, height]), axis=1)
    if outside.any():
        u, v = points[np.argmax(outside)]
        raise CameraError(f"{where}: hood point [{u:g}, {v:g}] lies outside the {width}x{height} "
                          "image (hood points are the camera image's pixels)")
    return points


def _whole(value: object) -> int | None:
    """A whole number (1280 or 1280.0) as an int; None for anything else (True, 12.5, text)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():  # also nan and inf
        return None
    return int(value)


def _floats(value: object) -> np.ndarray | None:
    """`value` as a float64 array; None when it is not numbers (text, ragged lists, None)."""
    if value is None:
        return None
    try:
        return np.array(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError, RecursionError):
        return None


def load_camera(path: str | Path) -> CameraModel:
    """Read a camera file: at most 64 KB of YAML without anchors or aliases (yaml_files.py)."""
    try:
        data = read_yaml(path, "camera file")
    except YamlFileError as error:
        raise CameraError(str(error)) from None
    return from_dict(data, where=str(path))


def camera_file_text(camera: CameraModel, comment: str = "") -> str:
    """The camera file `load_camera` reads, with `comment` as its header."""
    text = yaml.safe_dump(camera.to_dict(), sort_keys=False, default_flow_style=None)
    return "".join(f"# {line}\n" for line in comment.splitlines()) + text


# --- readers for datasets and the simulator ---------------------------------------------------

def projection_intrinsics(P: np.ndarray | list[float], width: int, height: int) -> np.ndarray:
    """K of a rectified camera's 3x4 projection matrix (KITTI's P2, a ROS CameraInfo's P),
    checked as a camera file's K is: CameraError for numbers that are not finite, focal lengths
    <= 0, a principal point outside the width x height image."""
    P = np.asarray(P, np.float64)
    if P.size != 12:
        raise CameraError(f"a projection matrix has 12 numbers (3x4), got {P.size}")
    P = P.reshape(3, 4)
    if not np.all(np.isfinite(P)):
        raise CameraError("the projection matrix must hold finite numbers")
    CameraModel(width, height, P[:, :3])  # validates K
    return P[:, :3].copy()


def read_kitti_calib(path: str | Path, width: int = 1242, height: int = 375) -> CameraModel:
    """Camera 2 (left colour, `image_2`) of a KITTI `calib/*.txt` file.

    K comes from P2. The camera's orientation is the rectified frame's, which KITTI's own 3-D
    labels take as level (objects turn only about its y axis; their bottoms lie ~1.65 m below
    it): pitch, roll and yaw 0, 1.65 m above the road (the KITTI setup). The Velodyne is not
    level in that frame (about 0.6 degrees here), so taking it as the vehicle frame would tilt
    the road and put cars at 30 m some 30 % too far. The camera's position along and across
    the car comes from R0_rect and Tr_velo_to_cam, with the vehicle origin below the Velodyne.
    Images are rectified: no distortion.
    """
    path = Path(path)
    if not path.is_file():
        raise CameraError(f"{path}: no such KITTI calib file")
    if path.stat().st_size > MAX_CALIB_BYTES:
        raise CameraError(f"{path}: larger than {MAX_CALIB_BYTES} bytes; not a KITTI calib file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CameraError(f"{path}: cannot be read as text ({error})") from None
    rows: dict[str, np.ndarray] = {}
    for line in text.splitlines():
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
    try:
        K = projection_intrinsics(P2, width, height)
        offset = np.linalg.solve(K, P2[:, 3])  # camera 2 relative to the rectified camera 0
        velo_to_cam = np.eye(4)
        velo_to_cam[:3] = rows["Tr_velo_to_cam"].reshape(3, 4)
        rect = np.eye(4)
        rect[:3, :3] = rows["R0_rect"].reshape(3, 3)
        velo_to_cam2 = rect @ velo_to_cam
        velo_to_cam2[:3, 3] += offset
        position = -velo_to_cam2[:3, :3].T @ velo_to_cam2[:3, 3]  # camera 2 in the Velodyne
        mount = Mount(x=float(position[0]), y=float(position[1]), z=KITTI_CAMERA_HEIGHT_M)
        return CameraModel(width, height, K, np.zeros(5), mount)
    except CameraError as error:
        raise CameraError(f"{path}: {error}") from None


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
