"""The v2 protocol's tensors: datatypes, and their data as raw bytes or JSON lists.

Raw bytes (the HTTP binary tensor extension, gRPC's `raw_*_contents`) are the elements in
row-major order, little-endian; a BYTES element is a 4-byte little-endian length and then its
bytes. Every malformed tensor (unknown datatype, negative dimension, data that does not fill the
shape exactly) is a `RequestError` 400 naming the tensor.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.service import RequestError

DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
_LENGTH = struct.Struct("<I")


@dataclass
class Tensor:
    """A named tensor: `data` has `shape` and the numpy type of `datatype` (BYTES: an object
    array of `bytes`)."""

    name: str
    datatype: str
    data: np.ndarray

    @property
    def shape(self) -> list[int]:
        return list(self.data.shape)


def element_count(name: str, datatype: str, shape: list[int]) -> int:
    """The shape's element count, once the datatype and the shape are known to be valid."""
    if datatype not in DATATYPES:
        raise RequestError(400, f"tensor {name!r}: datatype {datatype!r} is not one of "
                                f"{', '.join(DATATYPES)}")
    if any(dim < 0 for dim in shape):
        raise RequestError(400, f"tensor {name!r}: shape {shape} has a negative dimension")
    return math.prod(shape)


def from_raw(name: str, datatype: str, shape: list[int], raw: bytes) -> Tensor:
    """A tensor from its raw bytes, which must fill `shape` exactly."""
    count = element_count(name, datatype, shape)
    if datatype == "BYTES":
        return Tensor(name, datatype, np.array(_split_bytes(name, raw, count),
                                               dtype=object).reshape(shape))
    dtype = DATATYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise RequestError(400, f"tensor {name!r}: {len(raw)} bytes of data, but {datatype} "
                                f"{shape} needs {count * dtype.itemsize}")
    return Tensor(name, datatype, np.frombuffer(raw, dtype).reshape(shape))


def from_list(name: str, datatype: str, shape: list[int], data: list[Any]) -> Tensor:
    """A tensor from JSON data: a flat or nested list, row-major; BYTES elements are strings
    (their UTF-8 bytes)."""
    count = element_count(name, datatype, shape)
    try:
        if datatype == "BYTES":
            flat = np.array([_utf8(item) for item in _flatten(data)], dtype=object)
        else:
            flat = _numbers(data, DATATYPES[datatype]).reshape(-1)
    except (ValueError, TypeError, OverflowError, RecursionError) as error:
        raise RequestError(400, f"tensor {name!r}: data is not {datatype} "
                                f"({str(error).splitlines()[0][:120]})") from None
    if flat.size != count:
        raise RequestError(400, f"tensor {name!r}: {flat.size} elements of data, but shape "
                                f"{shape} has {count}")
    return Tensor(name, datatype, flat.reshape(shape))


def from_bytes_list(name: str, shape: list[int], items: list[bytes]) -> Tensor:
    """A BYTES tensor from its elements (gRPC's `bytes_contents`)."""
    count = element_count(name, "BYTES", shape)
    if len(items) != count:
        raise RequestError(400, f"tensor {name!r}: {len(items)} BYTES elements, but shape "
                                f"{shape} has {count}")
    return Tensor(name, "BYTES", np.array(items, dtype=object).reshape(shape))


def to_raw(tensor: Tensor) -> bytes:
    if tensor.datatype == "BYTES":
        return b"".join(_LENGTH.pack(len(item)) + item for item in tensor.data.reshape(-1))
    return np.ascontiguousarray(tensor.data, DATATYPES[tensor.datatype]).tobytes()


def to_list(tensor: Tensor) -> list[Any]:
    """The tensor's elements as a flat JSON list; BYTES as strings (invalid UTF-8 replaced:
    ask for binary data to get the bytes exactly)."""
    flat = tensor.data.reshape(-1)
    if tensor.datatype == "BYTES":
        return [item.decode("utf-8", "replace") for item in flat]
    return flat.tolist()


def _split_bytes(name: str, raw: bytes, count: int) -> list[bytes]:
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise RequestError(400, f"tensor {name!r}: BYTES data ends inside an element's "
                                    "4-byte length")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise RequestError(400, f"tensor {name!r}: a BYTES element of {length} bytes runs "
                                    f"past the data's end ({len(raw) - offset} left)")
        items.append(raw[offset:offset + length])
        offset += length
    if len(items) != count:
        raise RequestError(400, f"tensor {name!r}: {len(items)} BYTES elements, but the shape "
                                f"has {count}")
    return items


def _numbers(data: list[Any], dtype: np.dtype) -> np.ndarray:
    """JSON numbers as `dtype`: booleans only for BOOL, integers only for integer types,
    values within the type's range."""
    array = np.asarray(data)
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise ValueError("elements must be numbers in a regular (non-ragged) list")
    if dtype.kind == "b":
        if array.size and array.dtype.kind != "b":
            raise ValueError("elements must be true or false")
        return array.astype(dtype)
    if array.dtype.kind == "b":
        raise ValueError("elements must be numbers, not true/false")
    if dtype.kind in "iu":
        if array.dtype.kind == "f":
            raise ValueError("elements must be integers")
        info = np.iinfo(dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise ValueError(f"elements must lie in [{info.min}, {info.max}]")
    return array.astype(dtype)


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    return [item for part in data for item in _flatten(part)]


def _utf8(item: Any) -> bytes:
    if not isinstance(item, str):
        raise TypeError(f"BYTES elements in JSON are strings, not {type(item).__name__}")
    return item.encode("utf-8")
