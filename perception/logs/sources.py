"""Drive logs as frames: `open_log(path)` picks the reader for an MCAP file, a rosbag2 (or ROS 1)
bag, a KITTI folder, a video or an image folder and yields `Frame`s.

Every frame keeps the log's own clock: `Frame.timestamp` is the image's header stamp in seconds
(the message's log time where the stamp is zero). `start` and `end` are seconds from the
first message of the log, like `ros2 bag play --start-offset`. A log reader adds to `Frame.meta`:

    topic         the image topic (or KITTI camera folder)
    log_time_ns   when the message was logged
    frame_id      the camera's frame id
    camera_info   a `CameraInfo` when the log carries a calibration for this camera
    compressed    (format, bytes) of the original JPEG/PNG, so writers need not re-encode

Errors: anything that makes a log unusable (missing file, not a log, no such topic, no image
topic) raises `SourceError` before the first frame. A problem part-way (a truncated or corrupt
record, an image that does not decode) raises `CorruptRecordError` after the frames before it
were yielded; its message says where (topic, log time, byte offset). An image above `max_pixels`
(default 8K, `--max-pixels`) is never decoded: in a log or folder it is skipped with a warning
on stderr that says where, a single image file is a `SourceError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2

from perception.frames import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    CorruptRecordError,
    Frame,
    SourceError,
    count_frames,
    folder_frames,
    image_file_frames,
    video_frames,
)
from perception.logs.kitti_source import is_kitti, kitti_frames, kitti_topic_counts
from perception.logs.mcap_source import mcap_frames, mcap_span, mcap_topic_counts
from perception.logs.rosbag_source import rosbag_frames, rosbag_span, rosbag_topic_counts


def open_log(path: str | Path, topic: str | None = None, start: float | None = None,
             end: float | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[Frame]:
    """Frames of a drive log, video or image folder, in recorded order, within [start, end)."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    if start is not None and end is not None and end <= start:
        raise SourceError(f"empty time range: --end {end} is not after --start {start}")
    if path.is_file() and path.suffix == ".mcap":
        return mcap_frames(path, topic, start, end, max_pixels)
    if path.is_file() and (path.suffix in {".db3", ".bag"} or path.name == "metadata.yaml"):
        return rosbag_frames(path if path.suffix == ".bag" else path.parent, topic, start, end,
                             max_pixels)
    if path.is_dir() and (path / "metadata.yaml").is_file():
        return rosbag_frames(path, topic, start, end, max_pixels)
    if path.is_dir():
        if is_kitti(path):
            return kitti_frames(path, topic, start, end, max_pixels)
        frames = folder_frames(path, max_pixels)
    elif path.suffix.lower() in VIDEO_SUFFIXES:
        frames = video_frames(path, max_pixels)
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        frames = image_file_frames(path, max_pixels)
    else:
        raise SourceError(f"{path}: unknown kind of log (expected .mcap, a rosbag2 folder or "
                          ".db3, a .bag, a KITTI folder, a video or an image folder)")
    if topic is not None:
        raise SourceError(f"{path}: a video or image folder has no topics (asked for {topic})")
    return within(frames, start, end)


def count_log_frames(path: str | Path, topic: str | None = None) -> int | None:
    """How many frames `open_log(path, topic)` yields without a time range, where the log says
    so cheaply (an MCAP summary, a bag's metadata, a folder listing); for progress bars."""
    path = Path(path)
    if path.is_file() and (path.suffix == ".db3" or path.name == "metadata.yaml"):
        path = path.parent
    try:
        if path.is_file() and path.suffix == ".mcap":
            counts = mcap_topic_counts(path)
        elif path.suffix == ".bag" or (path.is_dir() and (path / "metadata.yaml").is_file()):
            counts = rosbag_topic_counts(path)
        elif path.is_dir():
            counts = kitti_topic_counts(path) if is_kitti(path) else None
            if counts is None:
                return count_frames(str(path))
        else:
            return count_frames(str(path))
    except Exception:  # a damaged log: no total, the reader will say what is wrong
        return None
    if not counts:
        return None
    if topic is None:
        return next(iter(counts.values())) if len(counts) == 1 else None
    return counts.get(topic)


def log_span(path: str | Path) -> float | None:
    """Seconds from a log's first message to its last, where the log says so cheaply (an MCAP
    summary, a bag's metadata, a video's frame count and rate, a folder's listing, at 1 s an
    image); None otherwise (an MCAP without summary, a KITTI folder). The timeline of
    `perception replay --foxglove`."""
    path = Path(path)
    if path.is_file() and (path.suffix == ".db3" or path.name == "metadata.yaml"):
        path = path.parent
    try:
        if path.is_file() and path.suffix == ".mcap":
            return mcap_span(path)
        if path.suffix == ".bag" or (path.is_dir() and (path / "metadata.yaml").is_file()):
            recordings = sorted(path.glob("*.mcap")) if path.is_dir() else []
            return mcap_span(recordings[0]) if len(recordings) == 1 else rosbag_span(path)
        if path.is_dir():
            count = None if is_kitti(path) else count_frames(str(path))
            return float(count - 1) if count else None
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return video_span(path)
    except Exception:  # a damaged log: no span, the reader will say what is wrong
        return None
    return 0.0 if path.suffix.lower() in IMAGE_SUFFIXES else None


def video_span(path: Path) -> float | None:
    """The time of a video's last frame, from its frame count and rate."""
    capture = cv2.VideoCapture(str(path))
    try:
        count, fps = capture.get(cv2.CAP_PROP_FRAME_COUNT), capture.get(cv2.CAP_PROP_FPS)
    finally:
        capture.release()
    return (count - 1) / fps if count > 0 and fps > 0 else None


def within(frames: Iterator[Frame], start: float | None, end: float | None) -> Iterator[Frame]:
    """The frames of a video, image folder or image whose time since the first frame lies in
    [start, end). A `SourceError` after the first frame (an image of the folder that does not
    decode) is a `CorruptRecordError`: the frames before it stand."""
    first = None
    try:
        for frame in frames:
            first = frame.timestamp if first is None else first
            since = frame.timestamp - first
            if start is not None and since < start:
                continue
            if end is not None and since >= end:
                return
            yield frame
    except SourceError as error:
        if first is None:
            raise
        raise CorruptRecordError(str(error)) from None
