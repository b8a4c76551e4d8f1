"""Frames from KITTI folders, with the camera's calibration on every frame.

Two layouts:
- raw drives: `2011_09_26/2011_09_26_drive_0001_sync/image_02/data/*.png`, the per-camera
  `image_02/timestamps.txt` and `2011_09_26/calib_cam_to_cam.txt` (P_rect_02, S_rect_02).
  Pass the drive folder (`..._sync`); the camera is the "topic": image_02 (left colour) by
  default, image_00..image_03.
- object benchmark: `training/image_2/*.png` with a `calib/<same stem>.txt` per image (P2).
  The frames are unrelated snapshots without timestamps: frame i gets time i / 10 s (KITTI's
  10 Hz), so `--rate` plays them at 10 frames/s.
An image above the pixel limit is skipped with a warning naming its camera folder and time.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from perception.driving.camera import CameraError
from perception.frames import (
    DEFAULT_MAX_PIXELS,
    CorruptRecordError,
    Frame,
    PixelLimitError,
    SourceError,
    read_image,
    warn_skipped,
)
from perception.logs.base import choose_topic
from perception.logs.camera_info import CameraInfo

RAW_CAMERAS = ("image_00", "image_01", "image_02", "image_03")
OBJECT_HZ = 10.0


def is_kitti(path: Path) -> bool:
    return (path / "image_2").is_dir() or any((path / c / "data").is_dir() for c in RAW_CAMERAS)


def kitti_topic_counts(path: Path) -> dict[str, int]:
    """Images per camera folder."""
    if (path / "image_2").is_dir():
        return {"image_2": len(list((path / "image_2").glob("*.png")))}
    counts = {c: len(list((path / c / "data").glob("*.png"))) for c in RAW_CAMERAS
              if (path / c / "data").is_dir()}
    return {"image_02": counts["image_02"]} if "image_02" in counts else counts


def kitti_frames(path: Path, topic: str | None = None, start: float | None = None,
                 end: float | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
                 ) -> Iterator[Frame]:
    path = Path(path)
    if not path.is_dir():
        raise SourceError(f"{path}: not a folder (expected a KITTI raw drive or object folder)")
    if (path / "image_2").is_dir():
        if topic not in (None, "image_2"):
            raise SourceError(f"{path}: a KITTI object folder has one camera, image_2 "
                              f"(asked for {topic})")
        return _object_frames(path, start, end, max_pixels)
    cameras = {c: "KITTI camera" for c in RAW_CAMERAS if (path / c / "data").is_dir()}
    if not cameras:
        raise SourceError(f"{path}: not a KITTI folder (no image_2/ and no image_0X/data/)")
    if topic is None and "image_02" in cameras:
        topic = "image_02"
    camera = choose_topic(path, cameras, {}, topic)
    return _raw_frames(path, camera, start, end, max_pixels)


def _object_frames(path: Path, start: float | None, end: float | None, max_pixels: int
                   ) -> Iterator[Frame]:
    images = sorted((path / "image_2").glob("*.png"))
    if not images:
        raise SourceError(f"{path / 'image_2'}: no .png images")
    for index, image_path in enumerate(images):
        timestamp = index / OBJECT_HZ
        if (start is not None and timestamp < start) or (end is not None and timestamp >= end):
            continue
        where = f"image_2 frame {index} ({image_path.name})"
        try:
            image = read_image(image_path, max_pixels)
        except PixelLimitError as error:
            warn_skipped(f"{where}: {error}")
            continue
        except SourceError as error:
            raise CorruptRecordError(f"{where}: {error}") from None
        meta = {"topic": "image_2", "log_time_ns": int(timestamp * 1e9), "frame_id": "image_2"}
        calib = path / "calib" / f"{image_path.stem}.txt"
        if calib.is_file():
            P2 = read_calibration(calib).get("P2")
            if P2 is None or len(P2) != 12:
                raise CorruptRecordError(f"image_2 frame {index}: {calib}: needs a P2 line of "
                                         "12 numbers")
            try:
                meta["camera_info"] = CameraInfo.from_projection(P2, image.shape[1],
                                                                 image.shape[0])
            except CameraError as error:
                raise CorruptRecordError(f"image_2 frame {index}: {calib}: P2: {error}") from None
        yield Frame(image, timestamp=timestamp, index=index, source=str(image_path),
                    name=image_path.stem, meta=meta)


def _raw_frames(path: Path, camera: str, start: float | None, end: float | None,
                max_pixels: int) -> Iterator[Frame]:
    images = sorted((path / camera / "data").glob("*.png"))
    if not images:
        raise SourceError(f"{path / camera / 'data'}: no .png images")
    stamps_file = path / camera / "timestamps.txt"
    if stamps_file.is_file():
        try:
            stamps = [parse_timestamp(line) for line in stamps_file.read_text().splitlines()
                      if line.strip()]
        except ValueError as error:
            raise SourceError(f"{stamps_file}: not a KITTI timestamp ({error})") from None
        if len(stamps) < len(images):
            raise SourceError(f"{stamps_file}: {len(stamps)} timestamps for {len(images)} "
                              "images")
    else:
        stamps = [i / OBJECT_HZ for i in range(len(images))]
    info = _raw_camera_info(path, camera)
    first = stamps[0]
    for index, image_path in enumerate(images):
        since = stamps[index] - first
        if (start is not None and since < start) or (end is not None and since >= end):
            continue
        where = f"{camera} frame {index} at log time {stamps[index]:.6f} s"
        try:
            image = read_image(image_path, max_pixels)
        except PixelLimitError as error:
            warn_skipped(f"{where}: {error}")
            continue
        except SourceError as error:
            raise CorruptRecordError(f"{where}: {error}") from None
        meta = {"topic": camera, "log_time_ns": int(round(stamps[index] * 1e9)),
                "frame_id": camera}
        if info is not None:
            meta["camera_info"] = info
        yield Frame(image, timestamp=stamps[index], index=index, source=str(image_path),
                    name=image_path.stem, meta=meta)


def _raw_camera_info(drive: Path, camera: str) -> CameraInfo | None:
    """The rectified camera's P_rect_0X and S_rect_0X from the date folder's calibration."""
    calib = drive.parent / "calib_cam_to_cam.txt"
    if not calib.is_file():
        calib = drive / "calib_cam_to_cam.txt"
    if not calib.is_file():
        return None
    values = read_calibration(calib)
    number = camera[-2:]
    P, size = values.get(f"P_rect_{number}"), values.get(f"S_rect_{number}")
    if P is None or len(P) != 12 or size is None or len(size) != 2:
        raise SourceError(f"{calib}: needs P_rect_{number} (12 numbers) and S_rect_{number} "
                          f"(2 numbers) for {camera}")
    try:
        return CameraInfo.from_projection(P, int(size[0]), int(size[1]))
    except CameraError as error:
        raise SourceError(f"{calib}: P_rect_{number}: {error}") from None


def read_calibration(path: Path) -> dict[str, list[float]]:
    """A KITTI calibration file: `KEY: v1 v2 ...` lines; lines that are not numbers are skipped
    (calib_time)."""
    values: dict[str, list[float]] = {}
    for line in path.read_text().splitlines():
        key, _, rest = line.partition(":")
        try:
            values[key.strip()] = [float(v) for v in rest.split()]
        except ValueError:
            continue
    return values


def parse_timestamp(line: str) -> float:
    """'2011-09-26 13:02:25.964389445' -> seconds since 1970, reading the clock as UTC."""
    date, _, fraction = line.strip().partition(".")
    seconds = datetime.fromisoformat(date).replace(tzinfo=UTC).timestamp()
    return seconds + float(f"0.{fraction or '0'}")
