"""The KServe v2 / Triton HTTP protocol under `/v2` (docs/serving.md), beside our own `/v1`.

Health (`/v2/health/live`, `/v2/health/ready`) is open, like `/healthz`; the rest needs an API
key when keys are on. Models are those of serving/kserve/models.py, each with the one version
"1" (`/versions/1/...` paths as Triton accepts them), and Triton's model configuration
(`/v2/models/{name}/config`, the model configuration extension). Errors are the protocol's JSON
`{"error": ...}` (with our `status` beside it): 400 bad input, 404 unknown model or version,
413 too large, 503 busy or loading, 504 too slow.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, ValidationError

from serving.http.dependencies import ServiceDep
from serving.http.schemas import errors
from serving.kserve.http_body import HEADER_LENGTH, encode_answer, parse_infer
from serving.kserve.inference import infer_async
from serving.kserve.models import SERVER_METADATA, find_model, repository_index
from serving.kserve.tensors import DATATYPES
from serving.service import RequestError, Service

health_router = APIRouter(tags=["KServe v2"])
router = APIRouter(tags=["KServe v2"])


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ConfigOutput(BaseModel):
    name: str
    data_type: str  # model_config.proto's DataType: TYPE_FP32, TYPE_STRING (BYTES) ...
    dims: list[int]


class ConfigInput(ConfigOutput):
    optional: bool


class TritonModelConfig(BaseModel):
    """model_config.proto's ModelConfig, the fields this server fills."""

    name: str
    platform: str
    backend: str
    max_batch_size: int
    input: list[ConfigInput]
    output: list[ConfigOutput]


class ModelReady(BaseModel):
    name: str
    ready: bool


class IndexQuery(BaseModel):
    model_config = ConfigDict(strict=True)
    repository_name: str = ""  # one repository here: any name lists it
    ready: bool = False


class ModelIndex(BaseModel):
    name: str
    version: str
    state: str
    reason: str = ""


class OutputTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[OutputTensor]


_TENSOR = {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
    "name": {"type": "string"},
    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
    "datatype": {"type": "string", "enum": list(DATATYPES)},
    "parameters": {"type": "object",
                   "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
    "data": {"type": "array"}}}
INFER_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object", "properties": {
            "binary_data_output": {"type": "boolean"}, "camera": {"type": "string"}}},
        "inputs": {"type": "array", "items": _TENSOR},
        "outputs": {"type": "array", "items": {
            "type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"},
                "parameters": {"type": "object",
                               "properties": {"binary_data": {"type": "boolean"}}}}}}}}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                 "description": f"The binary tensor extension: JSON of "
                                                f"{HEADER_LENGTH} bytes, then the inputs' "
                                                "binary data"}}}}
INFER_ANSWER = {200: {"model": InferResponse, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
INDEX_BODY = {"requestBody": {"required": False, "content": {"application/json": {"schema": {
    "type": "object", "properties": {"repository_name": {"type": "string"},
                                     "ready": {"type": "boolean"}}}}}}}


@health_router.get("/v2/health/live", response_model=Live, summary="v2: the server is alive")
async def live() -> dict[str, bool]:
    return {"live": True}


@health_router.get("/v2/health/ready", response_model=Ready, responses=errors(503),
                   summary="v2: the models are loaded and warm")
async def ready(service: ServiceDep) -> dict[str, bool]:
    service.check_ready()
    return {"ready": True}


@router.get("/v2", response_model=ServerMetadata, responses=errors(401),
            summary="v2: server metadata")
async def server_metadata() -> dict[str, Any]:
    return SERVER_METADATA


@router.get("/v2/models/{name}", response_model=ModelMetadata, responses=errors(401, 404, 503),
            summary="v2: model metadata (inputs and outputs)")
async def model_metadata(name: str, service: ServiceDep) -> dict[str, Any]:
    return find_model(service, name).metadata()


@router.get("/v2/models/{name}/versions/{version}", response_model=ModelMetadata,
            responses=errors(401, 404, 503), summary="v2: model metadata, of one version")
async def version_metadata(name: str, version: str, service: ServiceDep) -> dict[str, Any]:
    return find_model(service, name, version).metadata()


@router.get("/v2/models/{name}/config", response_model=TritonModelConfig,
            responses=errors(401, 404, 503), summary="v2: Triton's model configuration")
async def model_config(name: str, service: ServiceDep) -> dict[str, Any]:
    return find_model(service, name).config()


@router.get("/v2/models/{name}/versions/{version}/config", response_model=TritonModelConfig,
            responses=errors(401, 404, 503),
            summary="v2: Triton's model configuration, of one version")
async def version_config(name: str, version: str, service: ServiceDep) -> dict[str, Any]:
    return find_model(service, name, version).config()


@router.get("/v2/models/{name}/ready", response_model=ModelReady,
            responses=errors(401, 404, 503), summary="v2: the model is ready")
async def model_ready(name: str, service: ServiceDep) -> dict[str, Any]:
    return {"name": find_model(service, name).name, "ready": True}


@router.get("/v2/models/{name}/versions/{version}/ready", response_model=ModelReady,
            responses=errors(401, 404, 503), summary="v2: the model's version is ready")
async def version_ready(name: str, version: str, service: ServiceDep) -> dict[str, Any]:
    return {"name": find_model(service, name, version).name, "ready": True}


@router.post("/v2/models/{name}/infer", openapi_extra=INFER_BODY,
             responses={**INFER_ANSWER, **errors(400, 401, 404, 408, 413, 415, 431, 503, 504)},
             summary="v2: inference (JSON tensors or the binary tensor extension)")
async def infer(name: str, request: Request, service: ServiceDep) -> Response:
    return await _infer(service, request, name, "")


@router.post("/v2/models/{name}/versions/{version}/infer", openapi_extra=INFER_BODY,
             responses={**INFER_ANSWER, **errors(400, 401, 404, 408, 413, 415, 431, 503, 504)},
             summary="v2: inference on one version of the model")
async def version_infer(name: str, version: str, request: Request, service: ServiceDep
                        ) -> Response:
    return await _infer(service, request, name, version)


@router.post("/v2/repository/index", response_model=list[ModelIndex], openapi_extra=INDEX_BODY,
             responses=errors(400, 401, 408, 413, 431), summary="v2: the models served")
async def index(request: Request, service: ServiceDep) -> list[dict[str, str]]:
    body = await request.body()
    try:
        query = IndexQuery.model_validate_json(body) if body.strip() else IndexQuery()
    except ValidationError:
        raise RequestError(400, 'the index request is empty or a JSON object '
                                '{"repository_name": "...", "ready": true|false}') from None
    return repository_index(service, only_ready=query.ready)


async def _infer(service: Service, request: Request, name: str, version: str) -> Response:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise RequestError(415, f"Content-Encoding {encoding[:40]!r} is not supported; send "
                                "the body uncompressed")
    parsed = parse_infer(await request.body(), request.headers.get(HEADER_LENGTH), name, version)
    model, tensors = await infer_async(service, parsed.request)
    body, headers = encode_answer(model.name, parsed.request.id, tensors, parsed.binary)
    return Response(body, headers=headers)
