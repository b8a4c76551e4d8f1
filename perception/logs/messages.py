"""Image and calibration messages of Foxglove (protobuf) and ROS 2 (CDR) as frames.

`deserialize(kind, data)` turns a message's bytes into an object (rosbags' type store decodes
CDR without a ROS install); `image_of(kind, message)` and `camera_info_of(kind, message)` read
it. The MCAP and rosbag readers share these; `kind` is the message type name.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import cv2
import numpy as np
from foxglove_schemas_protobuf.CameraCalibration_pb2 import CameraCalibration
from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
from foxglove_schemas_protobuf.RawImage_pb2 import RawImage

from perception.frames import DEFAULT_MAX_PIXELS, check_pixels, decode_image
from perception.logs.camera_info import CameraInfo

IMAGE_TYPES = {"foxglove.CompressedImage", "foxglove.RawImage",
               "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/Image"}
CALIBRATION_TYPES = {"foxglove.CameraCalibration", "sensor_msgs/msg/CameraInfo"}
PROTOBUF_TYPES = {"foxglove.CompressedImage": CompressedImage, "foxglove.RawImage": RawImage,
                  "foxglove.CameraCalibration": CameraCalibration}
RAW_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8UC1": 1,
                "8UC3": 3, "mono16": 2, "16UC1": 2}
TO_BGR = {"rgb8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGBA2BGR, "bgra8": cv2.COLOR_BGRA2BGR,
          "mono8": cv2.COLOR_GRAY2BGR, "8UC1": cv2.COLOR_GRAY2BGR}


@dataclass
class DecodedImage:
    image: np.ndarray  # BGR uint8
    stamp_ns: int  # the message's header stamp, 0 when unset
    frame_id: str
    compressed: tuple[str, bytes] | None  # (format, bytes) of a JPEG/PNG/WebP message


def deserialize(kind: str, data: bytes) -> Any:
    if kind in PROTOBUF_TYPES:
        return PROTOBUF_TYPES[kind].FromString(data)
    return ros_typestore().deserialize_cdr(data, kind)


def image_of(kind: str, message: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Raises ValueError/SourceError with a readable message if the image does not decode, and
    PixelLimitError, before decoding, if it has more than `max_pixels` pixels."""
    if kind == "foxglove.CompressedImage":
        return DecodedImage(decode_image(message.data, f"{message.format or 'compressed'} image",
                                         max_pixels),
                            _stamp_ns(message.timestamp), message.frame_id,
                            _compressed(message.data))
    if kind == "foxglove.RawImage":
        check_pixels(message.width, message.height, max_pixels, f"{message.encoding} image")
        return DecodedImage(raw_to_bgr(message.data, message.width, message.height,
                                       message.encoding, message.step),
                            _stamp_ns(message.timestamp), message.frame_id, None)
    stamp, frame_id = _stamp_ns(message.header.stamp), message.header.frame_id
    if kind == "sensor_msgs/msg/CompressedImage":
        data = bytes(message.data)
        return DecodedImage(decode_image(data, f"{message.format or 'compressed'} image",
                                         max_pixels),
                            stamp, frame_id, _compressed(data))
    check_pixels(int(message.width), int(message.height), max_pixels,
                 f"{message.encoding} image")
    return DecodedImage(raw_to_bgr(bytes(message.data), message.width, message.height,
                                   message.encoding, message.step, bool(message.is_bigendian)),
                        stamp, frame_id, None)


def camera_info_of(kind: str, message: Any) -> CameraInfo:
    if kind == "foxglove.CameraCalibration":
        return CameraInfo(message.width, message.height, K=list(message.K), P=list(message.P),
                          D=list(message.D), distortion_model=message.distortion_model)
    return CameraInfo(int(message.width), int(message.height), K=message.k.tolist(),
                      P=message.p.tolist(), D=message.d.tolist(),
                      distortion_model=message.distortion_model)


def raw_to_bgr(data: bytes, width: int, height: int, encoding: str, step: int,
               big_endian: bool = False) -> np.ndarray:
    """An uncompressed image (ROS `Image`, `foxglove.RawImage`) as BGR uint8."""
    if encoding not in RAW_CHANNELS:
        raise ValueError(f"unsupported raw image encoding {encoding!r} "
                         f"(supported: {', '.join(RAW_CHANNELS)})")
    bytes_per_pixel = RAW_CHANNELS[encoding]
    step = step or width * bytes_per_pixel
    if width <= 0 or height <= 0 or step < width * bytes_per_pixel or len(data) < step * height:
        raise ValueError(f"{len(data)} bytes do not hold a {width}x{height} {encoding} image "
                         f"with row step {step}")
    rows = np.frombuffer(data, np.uint8, count=step * height).reshape(height, step)
    pixels = rows[:, :width * bytes_per_pixel]
    if bytes_per_pixel == 2:  # 16-bit mono: keep the top 8 bits
        mono = pixels.copy().view(">u2" if big_endian else "<u2").reshape(height, width)
        return cv2.cvtColor((mono >> 8).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    image = pixels.reshape(height, width, bytes_per_pixel)
    return cv2.cvtColor(image, TO_BGR[encoding]) if encoding in TO_BGR else image.copy()


def _compressed(data: bytes) -> tuple[str, bytes] | None:
    """(format, data) for the image formats Foxglove shows, told by their magic bytes (the
    messages' own `format` strings vary: "jpeg", "bgr8; jpeg compressed bgr8", ""); None for
    others (BMP, TIFF), which writers re-encode."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg", data
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png", data
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp", data
    return None


def _stamp_ns(stamp: Any) -> int:
    """ns from a protobuf Timestamp (seconds, nanos) or a ROS Time (sec, nanosec)."""
    if hasattr(stamp, "seconds"):
        return stamp.seconds * 1_000_000_000 + stamp.nanos
    return stamp.sec * 1_000_000_000 + stamp.nanosec


@cache
def ros_typestore() -> Any:
    """The ROS 2 Humble message definitions shipped with rosbags (built once)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)
