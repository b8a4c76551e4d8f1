"""The HTTP infer body: JSON, or JSON followed by binary tensor data (the binary tensor extension).

With the header `Inference-Header-Content-Length: N`, a body's first N bytes are the JSON
request and the rest is the raw data of the inputs whose parameters give a `binary_data_size`,
in the inputs' order, end to end. An answer carries an output the same way when it is asked
for as binary (the output's `parameters.binary_data`, else the request's
`parameters.binary_data_output`); else its elements are a JSON list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serving.kserve.inference import InferRequest
from serving.kserve.models import VERSION
from serving.kserve.tensors import Tensor, from_list, from_raw, to_list, to_raw
from serving.service import RequestError

HEADER_LENGTH = "Inference-Header-Content-Length"


class InputTensor(BaseModel):
    model_config = ConfigDict(strict=True)
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: list[Any] | None = None


class RequestedOutput(BaseModel):
    model_config = ConfigDict(strict=True)
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferBody(BaseModel):
    model_config = ConfigDict(strict=True)
    id: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[InputTensor]
    outputs: list[RequestedOutput] | None = None


@dataclass
class HttpInfer:
    request: InferRequest
    binary: Callable[[str], bool]  # whether an output is answered as binary data


def parse_infer(body: bytes, header_length: str | None, model: str, version: str) -> HttpInfer:
    """The request in an infer body; 400 for anything malformed, naming what."""
    json_end = _json_length(header_length, len(body))
    try:
        parsed = InferBody.model_validate(orjson.loads(body[:json_end]))
    except orjson.JSONDecodeError as error:
        raise RequestError(400, f"the infer request is not JSON ({error})") from None
    except ValidationError as error:
        raise RequestError(400, "the infer request: " + _validation_message(error)) from None
    inputs = _inputs(parsed.inputs, memoryview(body)[json_end:], header_length is not None)
    default = _flag(parsed.parameters, "binary_data_output")
    binary = {}
    for output in parsed.outputs or []:
        if "classification" in output.parameters:
            raise RequestError(400, f"output {output.name!r}: the classification extension is "
                                    "not supported")
        binary[output.name] = _flag(output.parameters, "binary_data", default)
    request = InferRequest(model, version, inputs,
                           [output.name for output in parsed.outputs] if parsed.outputs else None,
                           parsed.parameters, parsed.id)
    return HttpInfer(request, lambda name: binary.get(name, default))


def encode_answer(model: str, request_id: str, tensors: list[Tensor],
                  binary: Callable[[str], bool]) -> tuple[bytes, dict[str, str]]:
    """The answer's body and headers (with binary data: its JSON's length)."""
    outputs, chunks = [], []
    for tensor in tensors:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype,
                                 "shape": tensor.shape}
        if binary(tensor.name):
            raw = to_raw(tensor)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = to_list(tensor)
        outputs.append(entry)
    answer: dict[str, Any] = {"model_name": model, "model_version": VERSION}
    if request_id:
        answer["id"] = request_id
    answer["outputs"] = outputs
    header = orjson.dumps(answer)
    if not chunks:
        return header, {"content-type": "application/json"}
    return header + b"".join(chunks), {"content-type": "application/octet-stream",
                                       HEADER_LENGTH: str(len(header))}


def _json_length(header_length: str | None, body_length: int) -> int:
    if header_length is None:
        return body_length
    try:
        length = int(header_length)
    except ValueError:
        raise RequestError(400, f"{HEADER_LENGTH} {header_length[:40]!r} is not a byte "
                                "count") from None
    if not 0 < length <= body_length:
        raise RequestError(400, f"{HEADER_LENGTH} {length} does not fit the body's "
                                f"{body_length} bytes")
    return length


def _inputs(inputs: list[InputTensor], binary: memoryview, has_binary: bool) -> list[Tensor]:
    tensors, offset = [], 0
    for tensor in inputs:
        size = tensor.parameters.get("binary_data_size")
        if size is None:
            if tensor.data is None:
                raise RequestError(400, f"input {tensor.name!r} has neither data nor "
                                        "parameters.binary_data_size")
            tensors.append(from_list(tensor.name, tensor.datatype, tensor.shape, tensor.data))
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise RequestError(400, f"input {tensor.name!r}: binary_data_size {size!r} is not "
                                    "a byte count")
        if tensor.data is not None:
            raise RequestError(400, f"input {tensor.name!r} has both data and "
                                    "binary_data_size")
        if not has_binary:
            raise RequestError(400, f"input {tensor.name!r} has binary data, but the request "
                                    f"has no {HEADER_LENGTH} header")
        if offset + size > len(binary):
            raise RequestError(400, f"input {tensor.name!r}: binary_data_size {size} runs past "
                                    f"the body's end ({len(binary) - offset} bytes left)")
        tensors.append(from_raw(tensor.name, tensor.datatype, tensor.shape,
                                bytes(binary[offset:offset + size])))
        offset += size
    if offset != len(binary):
        raise RequestError(400, f"{len(binary) - offset} bytes of binary data follow the "
                                "inputs' binary_data_size")
    return tensors


def _flag(parameters: dict[str, Any], name: str, default: bool = False) -> bool:
    value = parameters.get(name, default)
    if not isinstance(value, bool):
        raise RequestError(400, f"parameter {name!r} is true or false, not {value!r}")
    return value


def _validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:3]:
        where = ".".join(str(p) for p in item.get("loc", ())) or "body"
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(parts)
