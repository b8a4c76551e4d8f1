"""Camera frames and the sources that yield them.

Every way frames enter the system (an image, a folder, a video, a camera, a drive log) is an
iterable of `Frame`. A source raises `SourceError` with a readable message for anything a user
can get wrong (missing path, undecodable file, empty video); callers turn that into an exit code
or an HTTP status.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from perception.errors import PerceptionError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


class SourceError(PerceptionError):
    """A frame source cannot be opened or read; the message says what and where."""


@dataclass
class Frame:
    """One camera image: BGR uint8 (H, W, 3), with when and where it came from."""

    image: np.ndarray
    timestamp: float  # seconds; the log's or video's own clock where there is one
    index: int  # position in its source, from 0
    source: str  # source id: a file path, "camera:0", a log topic...
    name: str = ""  # short stem for output files (image stem or 6-digit frame index)
    meta: dict = field(default_factory=dict)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


def decode_image(data: bytes, what: str = "image") -> np.ndarray:
    """Decode JPEG/PNG bytes to BGR uint8, or raise SourceError."""
    if not data:
        raise SourceError(f"{what} is empty (0 bytes)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise SourceError(f"{what} could not be decoded as an image (truncated or not JPEG/PNG)")
    return image


def read_image(path: Path) -> np.ndarray:
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    return decode_image(path.read_bytes(), what=str(path))


def image_file_frames(path: Path) -> Iterator[Frame]:
    yield Frame(read_image(path), timestamp=0.0, index=0, source=str(path), name=path.stem)


def folder_frames(path: Path) -> Iterator[Frame]:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SourceError(f"{path}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    for index, file in enumerate(files):
        yield Frame(read_image(file), timestamp=float(index), index=index, source=str(file),
                    name=file.stem)


def video_frames(path: Path) -> Iterator[Frame]:
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SourceError(f"{path}: cannot be read as a video (no frames, truncated or not a "
                          "video)")
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    try:
        index = 0
        while True:
            ok, image = capture.read()
            if not ok:
                break
            timestamp = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            yield Frame(image, timestamp=timestamp, index=index, source=str(path),
                        name=f"{index:06d}", meta={"fps": fps} if fps > 0 else {})
            index += 1
        if index == 0:
            raise SourceError(f"{path}: video has no decodable frames")
    finally:
        capture.release()


def camera_frames(device: int) -> Iterator[Frame]:
    capture = cv2.VideoCapture(device)
    if not capture.isOpened():
        raise SourceError(f"camera {device}: cannot be opened")
    try:
        index = 0
        while True:
            ok, image = capture.read()
            if not ok:
                if index == 0:
                    raise SourceError(f"camera {device}: delivered no frame")
                return
            yield Frame(image, timestamp=time.time(), index=index, source=f"camera:{device}",
                        name=f"{index:06d}")
            index += 1
    finally:
        capture.release()


def count_frames(spec: str) -> int | None:
    """How many frames `open_source(spec)` will yield, where that is known beforehand."""
    path = Path(spec)
    if path.is_dir():
        return sum(1 for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return 1
    if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
        capture = cv2.VideoCapture(str(path))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        capture.release()
        return count or None
    return None


def open_source(spec: str) -> Iterator[Frame]:
    """Frames from an image file, a folder of images (sorted), a video file or a camera index."""
    if spec.isdigit():
        return camera_frames(int(spec))
    path = Path(spec)
    if path.is_dir():
        return folder_frames(path)
    if not path.exists():
        raise SourceError(f"{spec}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return image_file_frames(path)
    if suffix in VIDEO_SUFFIXES:
        return video_frames(path)
    raise SourceError(f"{spec}: unknown kind of source (expected an image, a folder, a video "
                      "or a camera index)")
