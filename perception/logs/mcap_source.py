"""Frames from an MCAP file: Foxglove `CompressedImage`/`RawImage` (protobuf) or ROS 2
`sensor_msgs/msg/CompressedImage`/`Image` (CDR, decoded with rosbags' type store, no ROS).

The file is read front to back as a stream of records, so a truncated file (no footer, no
index) still yields every frame before the cut. Calibration messages (`foxglove.
CameraCalibration`, `sensor_msgs/msg/CameraInfo`) for the camera are attached as they appear.
An image above the pixel limit is skipped with a warning naming its topic, log time and offset.

Memory stays bounded on a hostile file: no record may be longer, and no chunk inflate to more,
than `MIN_RECORD_LIMIT` or what an image within the pixel limit could need
(`MAX_FILE_BYTES_PER_PIXEL` bytes per pixel), whichever is larger; the mcap library alone
would inflate a 300 KB zstd chunk to the 10 GB its header claims.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import lz4.frame
import zstandard
from mcap.exceptions import EndOfFile
from mcap.reader import SeekingReader
from mcap.records import Channel, Chunk, McapRecord, Message, Schema
from mcap.stream_reader import StreamReader, breakup_chunk

from perception.frames import (
    DEFAULT_MAX_PIXELS,
    MAX_FILE_BYTES_PER_PIXEL,
    CorruptRecordError,
    Frame,
    PixelLimitError,
    SourceError,
    warn_skipped,
)
from perception.logs.base import calibration_topic, choose_topic
from perception.logs.camera_info import CameraInfo
from perception.logs.messages import (
    CALIBRATION_TYPES,
    IMAGE_TYPES,
    PROTOBUF_TYPES,
    camera_info_of,
    deserialize,
    image_of,
)

MCAP_MAGIC = b"\x89MCAP0\r\n"
MIN_RECORD_LIMIT = 64 << 20  # writers close a chunk at about 1 MB (mcap's default), or one image


def mcap_frames(path: Path, topic: str | None = None, start: float | None = None,
                end: float | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
                ) -> Iterator[Frame]:
    """Check the file and the topic now; return the frames lazily."""
    images, others, start_ns = _topics(path, max_pixels)
    if not images and not others:
        raise SourceError(f"{path}: no channels before the file ends at byte "
                          f"{path.stat().st_size} (an empty or truncated MCAP)")
    topic = choose_topic(path, images, others, topic)
    calibration = calibration_topic(topic, [name for name, kind in others.items()
                                            if kind in CALIBRATION_TYPES])
    return _frames(path, topic, calibration, start_ns, start, end, max_pixels)


def mcap_topic_counts(path: Path) -> dict[str, int] | None:
    """Messages per image topic from the file's summary; None without one."""
    with open(path, "rb") as file:
        summary = SeekingReader(file).get_summary()
    if summary is None or summary.statistics is None:
        return None
    counts: dict[str, int] = {}
    for channel_id, count in summary.statistics.channel_message_counts.items():
        channel = summary.channels[channel_id]
        schema = summary.schemas.get(channel.schema_id)
        if schema is not None and schema.name in IMAGE_TYPES:
            counts[channel.topic] = counts.get(channel.topic, 0) + count
    return counts


def mcap_span(path: Path) -> float | None:
    """Seconds from the first message to the last, from the file's summary; None without."""
    with open(path, "rb") as file:
        summary = SeekingReader(file).get_summary()
    if summary is None or summary.statistics is None or not summary.statistics.message_count:
        return None
    statistics = summary.statistics
    return (statistics.message_end_time - statistics.message_start_time) / 1e9


def _topics(path: Path, max_pixels: int) -> tuple[dict[str, str], dict[str, str], int | None]:
    """(image topics, other topics, first log time) from the summary, or by scanning a file
    that has none (a truncated recording)."""
    topics: dict[str, str] = {}
    start_ns = None
    with open(path, "rb") as file:
        if file.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
            raise SourceError(f"{path}: not an MCAP file (no MCAP magic at the start)")
        file.seek(0)
        try:
            summary = SeekingReader(file).get_summary()
        except Exception:  # no footer or index: truncated, scan it below
            summary = None
        if summary is not None and summary.channels:
            for channel in summary.channels.values():
                schema = summary.schemas.get(channel.schema_id)
                topics[channel.topic] = schema.name if schema else ""
            if summary.statistics is not None and summary.statistics.message_count:
                start_ns = summary.statistics.message_start_time
        else:
            file.seek(0)
            schemas: dict[int, str] = {}
            try:
                for record in records(file, max_pixels, validate_crcs=False):
                    if isinstance(record, Schema):
                        schemas[record.id] = record.name
                    elif isinstance(record, Channel):
                        topics[record.topic] = schemas.get(record.schema_id, "")
            except Exception:  # a truncated file: the channels seen so far are all there are
                pass
    images = {name: kind for name, kind in topics.items() if kind in IMAGE_TYPES}
    others = {name: kind for name, kind in topics.items() if kind not in IMAGE_TYPES}
    return images, others, start_ns


def _frames(path: Path, topic: str, calibration: str | None, start_ns: int | None,
            start: float | None, end: float | None, max_pixels: int) -> Iterator[Frame]:
    schemas: dict[int, Schema] = {}
    channels: dict[int, Channel] = {}
    camera_info: CameraInfo | None = None
    index = 0
    last = "before the first image"
    container = 0  # byte offset of the top-level record (often a chunk) holding `record`
    with open(path, "rb") as file:
        stream = records(file, max_pixels)
        while True:
            offset = file.tell()
            try:
                record = next(stream)
            except StopIteration:
                return
            except Exception as error:  # truncated or corrupt: keep what came before
                detail = f"the file ends inside it at byte {file.tell()} (truncated)" \
                    if isinstance(error, EndOfFile) else f"{type(error).__name__}: {error}"
                raise CorruptRecordError(f"{path}: corrupt record at byte offset {offset} "
                                         f"({last}): {detail}") from None
            if file.tell() != offset:  # read from the file, not from a chunk read before
                container = offset
            if isinstance(record, Schema):
                schemas[record.id] = record
            elif isinstance(record, Channel):
                channels[record.id] = record
            elif isinstance(record, Message) and record.channel_id in channels:
                channel = channels[record.channel_id]
                if start_ns is None:
                    start_ns = record.log_time
                since = (record.log_time - start_ns) / 1e9
                schema = schemas.get(channel.schema_id)
                kind = schema.name if schema else ""
                if channel.topic == calibration:
                    with suppress(Exception):  # an unreadable calibration: keep the last one
                        camera_info = camera_info_of(kind, deserialize(kind, record.data))
                    continue
                if channel.topic != topic:
                    continue
                encoding = "protobuf" if kind in PROTOBUF_TYPES else "cdr"
                if channel.message_encoding != encoding:
                    raise SourceError(f"{path}: {topic} holds {channel.message_encoding}-encoded "
                                      f"{kind} messages; only {encoding} is read")
                if start is not None and since < start:
                    continue
                if end is not None and since >= end:
                    return
                where = (f"{topic} message {index} at log time {record.log_time / 1e9:.6f} s "
                         f"(in the record at byte offset {container})")
                try:
                    decoded = image_of(kind, deserialize(kind, record.data), max_pixels)
                except PixelLimitError as error:
                    warn_skipped(f"{path}: {where}: {error}")
                    index += 1
                    continue
                except Exception as error:
                    raise CorruptRecordError(f"{path}: {where}: {error}") from None
                stamp_ns = decoded.stamp_ns or record.log_time
                meta = {"topic": topic, "log_time_ns": record.log_time,
                        "frame_id": decoded.frame_id, "compressed": decoded.compressed}
                if camera_info is not None:
                    meta["camera_info"] = camera_info
                yield Frame(decoded.image, timestamp=stamp_ns / 1e9, index=index,
                            source=f"{path}:{topic}", name=f"{index:06d}", meta=meta)
                last = f"after {where}"
                index += 1


def records(file: BinaryIO, max_pixels: int = DEFAULT_MAX_PIXELS, validate_crcs: bool = True
            ) -> Iterator[McapRecord]:
    """The file's records in order, with the records of each chunk in place of the chunk. A
    record longer, or a chunk that inflates to more, than the limit (see the module's
    docstring) raises before it is read or inflated."""
    limit = max(MIN_RECORD_LIMIT, MAX_FILE_BYTES_PER_PIXEL * max_pixels)
    reader = StreamReader(file, validate_crcs=validate_crcs, emit_chunks=True,
                          record_size_limit=limit)
    for record in reader.records:
        if isinstance(record, Chunk):
            yield from breakup_chunk(_inflated(record, limit), validate_crc=validate_crcs)
        else:
            yield record


def _inflated(chunk: Chunk, limit: int) -> Chunk:
    """The chunk with its data decompressed, reading at most `limit` bytes and no more than
    the size it declares."""
    if chunk.uncompressed_size > limit:
        raise ValueError(f"a chunk declares {chunk.uncompressed_size} bytes uncompressed, more "
                         f"than the {limit} allowed (see --max-pixels)")
    if chunk.compression == "zstd":
        with zstandard.ZstdDecompressor().stream_reader(chunk.data) as reader:
            data = reader.read(chunk.uncompressed_size + 1)
    elif chunk.compression == "lz4":
        data = lz4.frame.LZ4FrameDecompressor().decompress(
            chunk.data, max_length=chunk.uncompressed_size + 1)
    elif chunk.compression == "":
        data = chunk.data
    else:
        raise ValueError(f"a chunk is compressed with {chunk.compression!r} (zstd, lz4 or none "
                         "are read)")
    if len(data) != chunk.uncompressed_size:
        raise ValueError(f"a chunk does not inflate to the {chunk.uncompressed_size} bytes it "
                         "declares")
    return replace(chunk, compression="", data=data)
