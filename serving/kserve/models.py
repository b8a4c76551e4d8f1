"""The models the v2 protocol serves: `perception`, the whole chain, and each loaded network.

`perception` takes one image, encoded (`image`: BYTES [1], a JPEG or PNG) or decoded (`rgb`:
UINT8 [H, W, 3], RGB order), and answers what our own API does: boxes in frame pixels, scores,
class ids and names, the masks at the segmentation model's resolution (0/1, covering the whole
frame), and with a camera configured the plan as JSON. A network (by its zoo name) takes and
gives its raw ONNX tensors, as ONNX Runtime reports their names, types and shapes. Every model
has the one version "1".

Each model also has Triton's model configuration (its model configuration extension, which
Triton's perf_analyzer asks for first): the same inputs and outputs with Triton's TYPE_* data
types, its platform and backend, and `max_batch_size` 0. Triton's `max_batch_size` > 0 says
every input and output has a leading batch dimension, left out of `dims`, that a client may
fill with several samples; `perception` takes one image a request (our batcher groups requests
on its own, unseen by clients), and a network's tensors are whole as its ONNX graph declares
them (a batch dimension, fixed or -1, stays in `dims`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson
from onnxruntime import InferenceSession, NodeArg
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

from perception.inference import OnnxModel
from perception.modelspec import ModelSpec
from perception.pipeline import Perceiver
from perception.results import FrameResult
from serving.kserve.tensors import Tensor
from serving.service import RequestError, Service

VERSION = "1"
PERCEPTION = "perception"
SERVER_METADATA = {"name": "perception", "version": "1.0",
                   "extensions": ["binary_tensor_data", "model_repository",
                                  "model_configuration"]}
ORT_DATATYPES = {"tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16",
                 "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64", "tensor(int8)": "INT8",
                 "tensor(int16)": "INT16", "tensor(int32)": "INT32", "tensor(int64)": "INT64",
                 "tensor(float16)": "FP16", "tensor(float)": "FP32", "tensor(double)": "FP64",
                 "tensor(string)": "BYTES"}
# model_config.proto's DataType of each protocol datatype (BYTES is Triton's TYPE_STRING)
CONFIG_DATATYPES = {datatype: "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"
                    for datatype in ORT_DATATYPES.values()}


@dataclass(frozen=True)
class TensorSpec:
    """An input or output as model metadata gives it; -1 in `shape`: any size. `optional`: an
    input a request may leave out."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    optional: bool = False

    def metadata(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def config(self) -> dict:
        """The output as model_config.proto's ModelOutput (a type Triton lacks: TYPE_INVALID)."""
        return {"name": self.name, "data_type": CONFIG_DATATYPES.get(self.datatype, "TYPE_INVALID"),
                "dims": list(self.shape)}

    def input_config(self) -> dict:
        """The input as model_config.proto's ModelInput."""
        return {**self.config(), "optional": self.optional}

    def check(self, tensor: Tensor) -> None:
        if tensor.datatype != self.datatype:
            raise RequestError(400, f"input {self.name!r} is {tensor.datatype}; the model takes "
                                    f"{self.datatype}")
        shape = tensor.shape
        if len(shape) != len(self.shape) or any(
                want not in (-1, got) for want, got in zip(self.shape, shape, strict=True)):
            raise RequestError(400, f"input {self.name!r} has shape {shape}; the model takes "
                                    f"{list(self.shape)} (-1: any size)")


class V2Model:
    """What every served model has: a name, a platform and backend (Triton's words for what runs
    it) and its inputs and outputs."""

    name: str
    platform: str
    backend: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def metadata(self) -> dict:
        return {"name": self.name, "versions": [VERSION], "platform": self.platform,
                "inputs": [spec.metadata() for spec in self.inputs],
                "outputs": [spec.metadata() for spec in self.outputs]}

    def config(self) -> dict:
        """Triton's model configuration (model_config.proto's ModelConfig as JSON, its field
        names); `max_batch_size` 0, as the module says why."""
        return {"name": self.name, "platform": self.platform, "backend": self.backend,
                "max_batch_size": 0, "input": [spec.input_config() for spec in self.inputs],
                "output": [spec.config() for spec in self.outputs]}

    def check_inputs(self, inputs: list[Tensor]) -> dict[str, Tensor]:
        """The inputs by name, each checked against its spec: no unknown or repeated name."""
        specs = {spec.name: spec for spec in self.inputs}
        given: dict[str, Tensor] = {}
        for tensor in inputs:
            spec = specs.get(tensor.name)
            if spec is None:
                raise RequestError(400, f"model {self.name!r} has no input {tensor.name!r} "
                                        f"(inputs: {', '.join(specs)})")
            if tensor.name in given:
                raise RequestError(400, f"input {tensor.name!r} is given twice")
            spec.check(tensor)
            given[tensor.name] = tensor
        return given

    def check_outputs(self, names: list[str] | None) -> list[str]:
        """The outputs to answer: those asked for (none: all), each known and asked once."""
        known = [spec.name for spec in self.outputs]
        if not names:  # none asked for: all (in gRPC, an empty list is no list)
            return known
        for name in names:
            if name not in known:
                raise RequestError(400, f"model {self.name!r} has no output {name!r} "
                                        f"(outputs: {', '.join(known)})")
        if len(set(names)) != len(names):
            raise RequestError(400, f"outputs {names} name one output twice")
        return names


class PerceptionModel(V2Model):
    """The whole chain on one image, through the service's limits and batcher.

    Its platform and backend are "python": the chain is Python calling the networks, what
    Triton runs as a Python-backend model. Triton's "ensemble" would be a pipeline of served
    models that the server wires together (`ensemble_scheduling` steps), and decoding, NMS, the
    masks and the plan are no served models. Its two inputs are optional in the config's sense:
    a request gives exactly one of them."""

    platform = backend = "python"

    def __init__(self, specs: list[ModelSpec], plans: bool) -> None:
        self.name = PERCEPTION
        self.inputs = [TensorSpec("image", "BYTES", (1,), optional=True),
                       TensorSpec("rgb", "UINT8", (-1, -1, 3), optional=True)]
        self.outputs = []
        if any(spec.detects for spec in specs):
            self.outputs += [TensorSpec("boxes", "FP32", (-1, 4)),
                             TensorSpec("scores", "FP32", (-1,)),
                             TensorSpec("classes", "INT32", (-1,)),
                             TensorSpec("labels", "BYTES", (-1,))]
        if any(spec.segments for spec in specs):
            self.outputs += [TensorSpec("drivable", "UINT8", (-1, -1)),
                             TensorSpec("lanes", "UINT8", (-1, -1))]
        if plans:
            self.outputs.append(TensorSpec("plan", "BYTES", (1,)))

    def image(self, inputs: list[Tensor]) -> bytes | np.ndarray:
        """The request's one image: encoded bytes, or BGR pixels (the chain's order)."""
        given = self.check_inputs(inputs)
        if len(given) != 1:
            raise RequestError(400, "model 'perception' takes exactly one input: 'image' (an "
                                    "encoded JPEG or PNG, BYTES [1]) or 'rgb' (UINT8 [H, W, 3])")
        if "image" in given:
            return given["image"].data[0]
        rgb = given["rgb"].data
        if 0 in rgb.shape:
            raise RequestError(400, f"input 'rgb' has shape {list(rgb.shape)}: no pixels")
        return np.ascontiguousarray(rgb[..., ::-1])

    def answer(self, result: FrameResult, names: list[str], plan: dict | None) -> list[Tensor]:
        """The outputs `names` of one result (in frame pixels); `plan` as the API renders it."""
        detections = result.detections
        tensors = {
            "boxes": lambda: np.array([d.box for d in detections], np.float32).reshape(-1, 4),
            "scores": lambda: np.array([d.score for d in detections], np.float32),
            "classes": lambda: np.array([d.class_id for d in detections], np.int32),
            "labels": lambda: np.array([d.label.encode() for d in detections], object),
            "drivable": lambda: _mask(result.drivable),
            "lanes": lambda: _mask(result.lanes),
            "plan": lambda: np.array([orjson.dumps(plan)], object),
        }
        datatypes = {spec.name: spec.datatype for spec in self.outputs}
        return [Tensor(name, datatypes[name], tensors[name]()) for name in names]


class NetworkModel(V2Model):
    """One loaded ONNX network: its raw input tensors in, its raw output tensors out."""

    platform, backend = "onnxruntime_onnx", "onnxruntime"

    def __init__(self, name: str, session: InferenceSession) -> None:
        self.name = name
        self.session = session
        self.inputs = [_spec(arg) for arg in session.get_inputs()]
        self.outputs = [_spec(arg) for arg in session.get_outputs()]

    def run(self, inputs: list[Tensor], names: list[str]) -> list[Tensor]:
        given = self.check_inputs(inputs)
        missing = [spec.name for spec in self.inputs if spec.name not in given]
        if missing:
            raise RequestError(400, f"model {self.name!r} needs the inputs {missing}")
        try:
            arrays = self.session.run(names, {name: t.data for name, t in given.items()})
        except (InvalidArgument, Fail, RuntimeException) as error:
            message = str(error).strip().splitlines()[0][:300]
            raise RequestError(400, f"network {self.name!r} cannot run on these inputs: "
                                    f"{message}") from None
        datatypes = {spec.name: spec.datatype for spec in self.outputs}
        return [Tensor(name, datatypes[name], np.asarray(array))
                for name, array in zip(names, arrays, strict=True)]


def served_models(service: Service) -> dict[str, V2Model]:
    """The models by name, once the service's models are loaded (else 503)."""
    service.check_ready()
    models: dict[str, V2Model] = {PERCEPTION: PerceptionModel(service.model_specs(),
                                                              bool(service.cameras))}
    if isinstance(service.perceiver, Perceiver):
        for loaded in service.perceiver.models:
            if isinstance(loaded.session, OnnxModel) and loaded.spec.name not in models:
                models[loaded.spec.name] = NetworkModel(loaded.spec.name,
                                                        loaded.session.session)
    return models


def find_model(service: Service, name: str, version: str = "") -> V2Model:
    """The model `name` (404 unknown), at `version` ("" or "1"; another is 404)."""
    models = served_models(service)
    model = models.get(name)
    if model is None:
        raise RequestError(404, f"unknown model {name!r} (models: {', '.join(models)})")
    if version not in ("", VERSION):
        raise RequestError(404, f"model {name!r} has no version {version!r} (versions: "
                                f"{VERSION})")
    return model


def repository_index(service: Service, only_ready: bool = False) -> list[dict[str, str]]:
    """Triton's repository index: every model READY once loaded; before, the configured ones
    LOADING (or UNAVAILABLE, with the reason loading failed) unless `only_ready`."""
    if service.ready:
        return [{"name": name, "version": VERSION, "state": "READY", "reason": ""}
                for name in served_models(service)]
    if only_ready:
        return []
    state, reason = ("UNAVAILABLE", service.load_error) if service.load_error else ("LOADING", "")
    return [{"name": name, "version": VERSION, "state": state, "reason": reason}
            for name in [PERCEPTION, *service.config.models]]


def _mask(mask: np.ndarray | None) -> np.ndarray:
    return np.zeros((0, 0), np.uint8) if mask is None else mask.astype(np.uint8, copy=False)


def _spec(arg: NodeArg) -> TensorSpec:
    """An ONNX Runtime input or output (NodeArg) as tensor metadata: a symbolic dimension
    (e.g. the batch) is -1; a type the protocol lacks keeps ONNX's own name."""
    shape = tuple(dim if isinstance(dim, int) else -1 for dim in arg.shape)
    return TensorSpec(arg.name, ORT_DATATYPES.get(arg.type, arg.type), shape)
