"""Frames from a rosbag2 folder (sqlite3 or mcap storage) or a ROS 1 `.bag`, read with the
rosbags library (no ROS install): `sensor_msgs/msg/CompressedImage` or `Image`, with the
camera's `CameraInfo` when the bag has one.

A rosbag2 folder in mcap storage (one .mcap file) is streamed by the MCAP reader
(mcap_source.py): the frames before a cut are still read when the file lost its index (a
recording cut short), and its chunks are inflated within bounds (rosbags would inflate a chunk
to whatever size its compressed data claims). An image above the pixel limit is skipped with a
warning naming its topic and log time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

from rosbags.highlevel import AnyReader

from perception.frames import (
    DEFAULT_MAX_PIXELS,
    CorruptRecordError,
    Frame,
    PixelLimitError,
    SourceError,
    warn_skipped,
)
from perception.logs.base import calibration_topic, choose_topic
from perception.logs.mcap_source import mcap_frames
from perception.logs.messages import (
    CALIBRATION_TYPES,
    IMAGE_TYPES,
    camera_info_of,
    image_of,
    ros_typestore,
)


def rosbag_frames(path: Path, topic: str | None = None, start: float | None = None,
                  end: float | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
                  ) -> Iterator[Frame]:
    """Open the bag and check the topic now; return the frames lazily."""
    recordings = sorted(path.glob("*.mcap")) if path.is_dir() else []
    if len(recordings) == 1:  # mcap storage: stream the one file
        return mcap_frames(recordings[0], topic, start, end, max_pixels)
    try:
        reader = AnyReader([path], default_typestore=ros_typestore())
        reader.open()
    except Exception as error:
        raise SourceError(f"{path}: cannot be read as a bag: {error}") from None
    try:
        kinds = {name: info.msgtype or "" for name, info in reader.topics.items()}
        images = {name: kind for name, kind in kinds.items() if kind in IMAGE_TYPES}
        others = {name: kind for name, kind in kinds.items() if kind not in IMAGE_TYPES}
        topic = choose_topic(path, images, others, topic)
    except BaseException:
        reader.close()
        raise
    calibration = calibration_topic(topic, [name for name, kind in others.items()
                                            if kind in CALIBRATION_TYPES])
    return _frames(path, reader, topic, calibration, start, end, max_pixels)


def _frames(path: Path, reader: Any, topic: str, calibration: str | None,
            start: float | None, end: float | None, max_pixels: int) -> Iterator[Frame]:
    wanted = {topic, calibration} - {None}
    connections = [c for c in reader.connections if c.topic in wanted]
    first_ns = reader.start_time
    start_ns = first_ns + int(start * 1e9) if start is not None else None
    stop_ns = first_ns + int(end * 1e9) if end is not None else None
    camera_info = None
    index = 0
    last = "before the first image"
    try:
        messages = reader.messages(connections=connections, start=start_ns, stop=stop_ns)
        while True:
            try:
                connection, log_ns, raw = next(messages)
            except StopIteration:
                return
            except Exception as error:  # a damaged database or file: keep what came before
                raise CorruptRecordError(f"{path}: corrupt record ({last}): "
                                         f"{type(error).__name__}: {error}") from None
            kind = connection.msgtype
            if connection.topic == calibration:
                with suppress(Exception):  # an unreadable calibration: keep the last one
                    camera_info = camera_info_of(kind, reader.deserialize(raw, kind))
                continue
            where = f"{topic} message {index} at log time {log_ns / 1e9:.6f} s"
            try:
                decoded = image_of(kind, reader.deserialize(raw, kind), max_pixels)
            except PixelLimitError as error:
                warn_skipped(f"{path}: {where}: {error}")
                index += 1
                continue
            except Exception as error:
                raise CorruptRecordError(f"{path}: {where}: {error}") from None
            meta = {"topic": topic, "log_time_ns": log_ns, "frame_id": decoded.frame_id,
                    "compressed": decoded.compressed}
            if camera_info is not None:
                meta["camera_info"] = camera_info
            yield Frame(decoded.image, timestamp=(decoded.stamp_ns or log_ns) / 1e9,
                        index=index, source=f"{path}:{topic}", name=f"{index:06d}", meta=meta)
            last = f"after {where}"
            index += 1
    finally:
        reader.close()


def rosbag_topic_counts(path: Path) -> dict[str, int]:
    """Messages per image topic from the bag's metadata."""
    with AnyReader([path], default_typestore=ros_typestore()) as reader:
        return {name: info.msgcount for name, info in reader.topics.items()
                if info.msgtype in IMAGE_TYPES}


def rosbag_span(path: Path) -> float:
    """Seconds from the first message to the last, from the bag's metadata."""
    with AnyReader([path], default_typestore=ros_typestore()) as reader:
        return (reader.end_time - reader.start_time) / 1e9
