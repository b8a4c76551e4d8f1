"""An ONNX file's metadata, read without loading the model: no inference session, no `onnx`.

ONNX files are protobuf `ModelProto` messages whose `metadata_props` (field 14) is a list of
key/value string pairs (onnx.proto). A message type that declares only that and the graph
(field 7, kept as bytes, only to tell a model from other data) parses the file with protobuf
itself and skips everything else as unknown fields.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from perception.errors import PerceptionError

Field = descriptor_pb2.FieldDescriptorProto


@cache
def _model_with_metadata_only() -> type:
    file = descriptor_pb2.FileDescriptorProto(
        name="perception_onnx_metadata.proto", package="perception_onnx", syntax="proto2")
    entry = file.message_type.add(name="StringStringEntryProto")
    entry.field.add(name="key", number=1, type=Field.TYPE_STRING, label=Field.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=Field.TYPE_STRING, label=Field.LABEL_OPTIONAL)
    model = file.message_type.add(name="ModelProto")
    model.field.add(name="graph", number=7, type=Field.TYPE_BYTES, label=Field.LABEL_OPTIONAL)
    model.field.add(name="metadata_props", number=14, type=Field.TYPE_MESSAGE,
                    label=Field.LABEL_REPEATED,
                    type_name=".perception_onnx.StringStringEntryProto")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("perception_onnx.ModelProto"))


def onnx_metadata(path: Path) -> dict[str, str]:
    """The metadata_props of an ONNX file; a PerceptionError for a file that is not one."""
    message = _model_with_metadata_only()()
    try:
        message.ParseFromString(path.read_bytes())
    except (DecodeError, ValueError) as error:  # ValueError: a string that is not UTF-8
        raise PerceptionError(f"{path}: cannot load ONNX model (not a valid ONNX protobuf)") \
            from error
    if not message.HasField("graph"):  # e.g. an empty file, which parses as an empty message
        raise PerceptionError(f"{path}: cannot load ONNX model (no graph in it)")
    return {entry.key: entry.value for entry in message.metadata_props}
