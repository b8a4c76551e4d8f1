"""The v2 gRPC protocol: `inference.GRPCInferenceService`, on the same port as our own service.

The messages are serving/proto/kserve_v2.proto's (Triton's field numbers, in a package of our
own: see there why), registered under Triton's service name, so `tritonclient.grpc` talks to
it unchanged. Served: ServerLive, ServerReady (both open, like health), ModelReady,
ServerMetadata, ModelMetadata, ModelInfer, RepositoryIndex, ModelConfig (Triton's model
configuration extension); any other method answers UNIMPLEMENTED. Inputs come as
`raw_input_contents` or typed `contents`; outputs go back as `raw_output_contents`. The
models, checks and limits are serving/kserve/'s, the status codes serving/grpc_status.py's (an
unknown model or version is NOT_FOUND).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from serving.grpc_status import INTERNAL_ERROR, status_code
from serving.kserve.inference import InferRequest, infer_blocking
from serving.kserve.models import SERVER_METADATA, VERSION, find_model, repository_index
from serving.kserve.tensors import (
    Tensor,
    element_count,
    from_bytes_list,
    from_list,
    from_raw,
    to_raw,
)
from serving.proto import kserve_v2_pb2 as pb
from serving.service import RequestError, Service

log = logging.getLogger("perception.serving")

SERVICE = "inference.GRPCInferenceService"
OPEN_METHODS = frozenset({f"/{SERVICE}/ServerLive", f"/{SERVICE}/ServerReady"})
# The typed `contents` field of each datatype; FP16 comes only as raw bytes.
CONTENTS = {"BOOL": "bool_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
            "UINT32": "uint_contents", "UINT64": "uint64_contents", "INT8": "int_contents",
            "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
            "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}


class InferenceServicer:
    """The v2 methods over one `Service`; each takes its request and the call's context."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def server_live(self, request: pb.ServerLiveRequest, context: grpc.ServicerContext
                    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def server_ready(self, request: pb.ServerReadyRequest, context: grpc.ServicerContext
                     ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.service.ready)

    def model_ready(self, request: pb.ModelReadyRequest, context: grpc.ServicerContext
                    ) -> pb.ModelReadyResponse:
        find_model(self.service, request.name, request.version)
        return pb.ModelReadyResponse(ready=True)

    def server_metadata(self, request: pb.ServerMetadataRequest,
                        context: grpc.ServicerContext) -> pb.ServerMetadataResponse:
        return json_format.ParseDict(SERVER_METADATA, pb.ServerMetadataResponse())

    def model_metadata(self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext
                       ) -> pb.ModelMetadataResponse:
        model = find_model(self.service, request.name, request.version)
        return json_format.ParseDict(model.metadata(), pb.ModelMetadataResponse())

    def model_config(self, request: pb.ModelConfigRequest, context: grpc.ServicerContext
                     ) -> pb.ModelConfigResponse:
        model = find_model(self.service, request.name, request.version)
        return pb.ModelConfigResponse(config=json_format.ParseDict(model.config(),
                                                                   pb.ModelConfig()))

    def model_infer(self, request: pb.ModelInferRequest, context: grpc.ServicerContext
                    ) -> pb.ModelInferResponse:
        infer = InferRequest(request.model_name, request.model_version, _inputs(request),
                             [output.name for output in request.outputs] or None,
                             _parameters(request.parameters), request.id)
        model, tensors = infer_blocking(self.service, infer, context.time_remaining())
        response = pb.ModelInferResponse(model_name=model.name, model_version=VERSION,
                                         id=request.id)
        for tensor in tensors:
            response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            response.raw_output_contents.append(to_raw(tensor))
        return response

    def repository_index(self, request: pb.RepositoryIndexRequest,
                         context: grpc.ServicerContext) -> pb.RepositoryIndexResponse:
        return pb.RepositoryIndexResponse(models=[
            pb.RepositoryIndexResponse.ModelIndex(**entry)
            for entry in repository_index(self.service, request.ready)])


def add_to_server(service: Service, server: grpc.Server) -> None:
    """Register the v2 service under Triton's name on `server`."""
    servicer = InferenceServicer(service)
    methods: dict[str, tuple[Callable, type[Message]]] = {
        "ServerLive": (servicer.server_live, pb.ServerLiveRequest),
        "ServerReady": (servicer.server_ready, pb.ServerReadyRequest),
        "ModelReady": (servicer.model_ready, pb.ModelReadyRequest),
        "ServerMetadata": (servicer.server_metadata, pb.ServerMetadataRequest),
        "ModelMetadata": (servicer.model_metadata, pb.ModelMetadataRequest),
        "ModelInfer": (servicer.model_infer, pb.ModelInferRequest),
        "RepositoryIndex": (servicer.repository_index, pb.RepositoryIndexRequest),
        "ModelConfig": (servicer.model_config, pb.ModelConfigRequest),
    }
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            _answered(service, f"/{SERVICE}/{name}", method),
            request_deserializer=request_type.FromString,
            response_serializer=lambda response: response.SerializeToString())
        for name, (method, request_type) in methods.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


def _answered(service: Service, route: str, method: Callable[[Any, grpc.ServicerContext], Any]
              ) -> Callable[[Any, grpc.ServicerContext], Any]:
    """`method` with its errors as status codes (a bug: INTERNAL, traceback in the log) and
    each call counted in the metrics."""

    def call(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            response = method(request, context)
        except RequestError as error:
            code, message = status_code(error), error.message
        except Exception:
            log.exception("internal error on %s", route)
            code, message = grpc.StatusCode.INTERNAL, INTERNAL_ERROR
        else:
            service.metrics.requests.labels(route=route, code="OK").inc()
            return response
        service.metrics.requests.labels(route=route, code=code.name).inc()
        context.abort(code, message)

    return call


def _inputs(request: pb.ModelInferRequest) -> list[Tensor]:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise RequestError(400, f"raw_input_contents has {len(raw)} entries for "
                                f"{len(request.inputs)} inputs")
    tensors = []
    for index, tensor in enumerate(request.inputs):
        name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
        if raw:
            tensors.append(from_raw(name, datatype, shape, raw[index]))
        elif datatype == "BYTES":
            tensors.append(from_bytes_list(name, shape, list(tensor.contents.bytes_contents)))
        elif datatype in CONTENTS:
            values = list(getattr(tensor.contents, CONTENTS[datatype]))
            tensors.append(from_list(name, datatype, shape, values))
        else:
            element_count(name, datatype, shape)  # an unknown datatype is named here
            raise RequestError(400, f"input {name!r}: {datatype} data comes only in "
                                    "raw_input_contents")
    return tensors


def _parameters(parameters: Any) -> dict[str, Any]:
    """The request's parameters (map<string, InferParameter>) as plain values."""
    values = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        values[key] = getattr(parameter, choice) if choice else None
    return values
