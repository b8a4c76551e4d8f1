"""Camera frames and the sources that yield them.

Every way frames enter the system (an image, a folder, a video, a camera, a drive log) is an
iterable of `Frame`. A source raises `SourceError` with a readable message for anything a user
can get wrong (missing path, undecodable file, empty video); callers turn that into an exit code
or an HTTP status. A source that breaks part-way (a video cut mid-stream) raises
`CorruptRecordError` after the frames before the break.

Pixel limit: every reader takes the image size from the file's header (or the video's stream)
and refuses one above `max_pixels` (default `DEFAULT_MAX_PIXELS`, 8K) before a pixel is decoded,
so a small file that declares 30000x30000 costs nothing. A single image above it is an error;
in a folder or a drive log the frame is skipped with a warning on stderr (`warn_skipped`).
"""

from __future__ import annotations

import os
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from perception.errors import PerceptionError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}

# A reader's error is one line of ours: FFmpeg (read when OpenCV first opens a video) and
# OpenCV's own logging would print theirs before it. OPENCV_LOG_LEVEL, if set, still wins.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
if "OPENCV_LOG_LEVEL" not in os.environ:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


class SourceError(PerceptionError):
    """A frame source cannot be opened or read; the message says what and where."""


class CorruptRecordError(SourceError):
    """A source broke part-way (a truncated or corrupt record, a video cut mid-stream): the
    frames before it were read, nothing after."""


class PixelLimitError(SourceError):
    """An image whose header declares no pixels or more than the limit; it is never decoded."""


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


DEFAULT_MAX_PIXELS = 7680 * 4320  # 8K, the default of --max-pixels
MAX_FILE_BYTES_PER_PIXEL = 8  # an image file larger than this per allowed pixel is refused
VIDEO_COUNT_SLACK = 0.02  # a container's frame count may be an estimate (from the duration)


def pixel_limit(value: int) -> int:
    """A `--max-pixels` value, checked: at least 1, and at most what OpenCV itself agrees to
    decode (OPENCV_IO_MAX_IMAGE_PIXELS, which perception/cli.py sets)."""
    try:
        ceiling = int(os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", ""))
    except ValueError:
        ceiling = 1 << 30  # OpenCV's default
    if not 1 <= value <= ceiling:
        raise SourceError(f"--max-pixels must be between 1 and {ceiling} (OpenCV's own limit, "
                          f"OPENCV_IO_MAX_IMAGE_PIXELS), got {value}")
    return value


def check_pixels(width: int, height: int, max_pixels: int, what: str) -> None:
    """Refuse an image whose declared size is empty or above `max_pixels`."""
    if width <= 0 or height <= 0:
        raise PixelLimitError(f"{what}: header says {width}x{height} pixels")
    if width * height > max_pixels:
        raise PixelLimitError(f"{what} is {width}x{height} pixels; the limit is {max_pixels} "
                              "pixels (--max-pixels)")


def warn_skipped(message: str) -> None:
    """A frame of a folder or drive log that its reader skips (above the pixel limit): one
    line on stderr, naming where it is."""
    print(f"perception: warning: skipped {message}", file=sys.stderr)


def decode_image(data: bytes, what: str = "image",
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode JPEG, PNG, BMP, WebP or TIFF bytes to BGR uint8, or raise SourceError. The size
    in the header is checked against `max_pixels` before any pixel is decoded."""
    if not len(data):
        raise SourceError(f"{what} is empty (0 bytes)")
    width, height = image_size(data, what)
    check_pixels(width, height, max_pixels, what)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # OpenCV's own size limit (OPENCV_IO_MAX_IMAGE_PIXELS), a backstop
        image = None
    if image is None:
        raise SourceError(f"{what} could not be decoded as an image (truncated or corrupt)")
    return image


def image_size(data: bytes, what: str = "image") -> tuple[int, int]:
    """(width, height) from the header of a PNG, JPEG, BMP, WebP or TIFF image, without
    decoding the pixels; a SourceError for other data or a header cut short."""
    head = bytes(data[:16])
    try:
        if head.startswith(b"\x89PNG\r\n\x1a\n"):
            if head[12:16] != b"IHDR":
                raise SourceError(f"{what}: PNG header is truncated")
            return struct.unpack_from(">II", data, 16)
        if head.startswith(b"\xff\xd8"):
            return _jpeg_size(data, what)
        if head.startswith(b"BM"):
            return _bmp_size(data)
        if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
            return _webp_size(data, what)
        if head[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(data, what)
    except struct.error:
        raise SourceError(f"{what}: image header is truncated") from None
    raise SourceError(f"{what} is not a JPEG, PNG, BMP, WebP or TIFF image")


_JPEG_FRAME_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                       0xCF}


def _jpeg_size(data: bytes, what: str) -> tuple[int, int]:
    """Walk the JPEG marker segments to the start-of-frame, which holds the dimensions."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            break
        (length,) = struct.unpack_from(">H", data, i + 2)
        if marker in _JPEG_FRAME_MARKERS:
            if i + 9 > len(data):
                break
            height, width = struct.unpack_from(">HH", data, i + 5)
            return width, height
        i += 2 + length
    raise SourceError(f"{what}: JPEG header is truncated or has no frame header")


def _bmp_size(data: bytes) -> tuple[int, int]:
    (info_size,) = struct.unpack_from("<I", data, 14)
    if info_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return struct.unpack_from("<HH", data, 18)
    width, height = struct.unpack_from("<ii", data, 18)
    return width, abs(height)  # a negative height: rows stored top-down


def _webp_size(data: bytes, what: str) -> tuple[int, int]:
    chunk = bytes(data[12:16])
    if chunk == b"VP8 ":  # lossy: a key frame's start code, then 14-bit sizes
        if bytes(data[23:26]) != b"\x9d\x01\x2a":
            raise SourceError(f"{what}: WebP (VP8) header is corrupt")
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: a signature byte, then 14-bit sizes minus one
        (signature, bits) = struct.unpack_from("<BI", data, 20)
        if signature != 0x2F:
            raise SourceError(f"{what}: WebP (VP8L) header is corrupt")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: the canvas, 24-bit sizes minus one
        if len(data) < 30:
            raise struct.error("short")
        return (int.from_bytes(data[24:27], "little") + 1,
                int.from_bytes(data[27:30], "little") + 1)
    raise SourceError(f"{what}: WebP header has no VP8, VP8L or VP8X chunk")


_TIFF_FORMATS = {3: "H", 4: "I"}  # SHORT, LONG


def _tiff_size(data: bytes, what: str) -> tuple[int, int]:
    """ImageWidth (256) and ImageLength (257) of the first image file directory, the image
    OpenCV decodes."""
    order = "<" if data[:2] == b"II" else ">"
    (directory,) = struct.unpack_from(order + "I", data, 4)
    (entries,) = struct.unpack_from(order + "H", data, directory)
    size: dict[int, int] = {}
    for entry in range(directory + 2, directory + 2 + 12 * entries, 12):
        tag, kind = struct.unpack_from(order + "HH", data, entry)
        if tag in (256, 257) and kind in _TIFF_FORMATS:
            (size[tag],) = struct.unpack_from(order + _TIFF_FORMATS[kind], data, entry + 8)
    if len(size) < 2:
        raise SourceError(f"{what}: TIFF header has no image width and length")
    return size[256], size[257]


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image file, decoded; a file far larger than an image of `max_pixels` can be is
    refused before it is read."""
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES_PER_PIXEL * max_pixels:
            raise PixelLimitError(f"{path} is {size} bytes, more than an image within the "
                                  f"limit of {max_pixels} pixels can be (--max-pixels)")
        data = path.read_bytes()
    except OSError as error:
        raise SourceError(f"{path}: cannot be read ({error.strerror})") from None
    return decode_image(data, what=str(path), max_pixels=max_pixels)


def image_file_frames(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[Frame]:
    yield Frame(read_image(path, max_pixels), timestamp=0.0, index=0, source=str(path),
                name=path.stem)


def image_files(folder: Path) -> list[Path]:
    """The images of a folder, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def folder_frames(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[Frame]:
    """The folder's images in name order; frame i is image i of the listing (time i s). An
    image above the pixel limit is skipped with a warning."""
    files = image_files(path)
    if not files:
        raise SourceError(f"{path}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    skipped = 0
    for index, file in enumerate(files):
        try:
            image = read_image(file, max_pixels)
        except PixelLimitError as error:
            warn_skipped(str(error))
            skipped += 1
            continue
        yield Frame(image, timestamp=float(index), index=index, source=str(file),
                    name=file.stem)
    if skipped == len(files):
        raise SourceError(f"{path}: every image of the folder is above the pixel limit")


def video_frames(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[Frame]:
    """A video's frames. Its frame size is checked before any frame is decoded; a video that
    ends well before the frame count its container announces was cut or is corrupt
    (`CorruptRecordError` after the frames before the fault)."""
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SourceError(f"{path}: cannot be read as a video (no frames, truncated or not a "
                          "video)")
    try:
        check_pixels(int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                     int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), max_pixels,
                     f"{path}: the video's frame")
        fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        announced = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
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
        if index < announced - max(2, VIDEO_COUNT_SLACK * announced):
            raise CorruptRecordError(f"{path}: the video ends after {index} frames, but its "
                                     f"container announces {announced} (truncated or corrupt)")
    finally:
        capture.release()


def camera_frames(device: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[Frame]:
    capture = cv2.VideoCapture(device)
    if not capture.isOpened():
        raise SourceError(f"camera {device}: cannot be opened")
    try:
        check_pixels(int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                     int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), max_pixels,
                     f"camera {device}: its frame")
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
        return len(image_files(path))
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return 1
    if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
        capture = cv2.VideoCapture(str(path))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        capture.release()
        return count if count > 0 else None
    return None


def open_source(spec: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[Frame]:
    """Frames from an image file, a folder of images (sorted), a video file or a camera index;
    no frame above `max_pixels` is decoded."""
    if spec.isdigit():
        return camera_frames(int(spec), max_pixels)
    path = Path(spec)
    if path.is_dir():
        return folder_frames(path, max_pixels)
    if not path.exists():
        raise SourceError(f"{spec}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return image_file_frames(path, max_pixels)
    if suffix in VIDEO_SUFFIXES:
        return video_frames(path, max_pixels)
    raise SourceError(f"{spec}: unknown kind of source (expected an image, a folder, a video "
                      "or a camera index)")
