"""The v2 gRPC protocol (`inference.GRPCInferenceService`) on our gRPC port, spoken by Triton's
own client (tritonclient.grpc), unmodified, over a real channel; answers compared with our own
`/v1/perceive`. Requests tritonclient would never send go over a plain channel with our
messages (the same bytes on the wire, as the first test shows)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from serving_harness import (
    BDD,
    StatsPerceiver,
    assert_same_as_v1,
    real_server,
    running_server,
    solid_jpeg,
)
from tritonclient.grpc import model_config_pb2 as triton_config_pb2
from tritonclient.grpc import service_pb2 as triton_pb2
from tritonclient.utils import InferenceServerException

from perception.decode import decode_twinlitenet
from perception.preprocess import preprocess
from serving.proto import kserve_v2_pb2 as pb
from serving.service import ServeConfig, Service

INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module")
def real(models_mirror: Path) -> tuple[str, triton.InferenceServerClient, grpc.Channel]:
    base, _, app = real_server()
    address = f"127.0.0.1:{app.state.grpc.port}"
    client = triton.InferenceServerClient(address)
    channel = grpc.insecure_channel(address)
    yield base, client, channel
    client.close()
    channel.close()


@pytest.fixture(scope="module")
def jpeg(assets: Path) -> bytes:
    return sorted((assets / BDD).glob("*.jpg"))[0].read_bytes()


def image_input(data: bytes) -> triton.InferInput:
    tensor = triton.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([data], dtype=object))
    return tensor


def array_input(name: str, array: np.ndarray, datatype: str) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def raw_infer(channel: grpc.Channel, request: pb.ModelInferRequest,
              metadata: tuple = ()) -> pb.ModelInferResponse:
    call = channel.unary_unary(INFER, request_serializer=pb.ModelInferRequest.SerializeToString,
                               response_deserializer=pb.ModelInferResponse.FromString)
    return call(request, timeout=60, metadata=metadata)


# The model configuration's messages: the subset of Triton's fields that we fill.
CONFIG_SUBSETS = {"ModelConfig", "ModelInput", "ModelOutput"}


def test_messages_are_wire_compatible_with_tritons() -> None:
    """Every message of ours has Triton's fields: numbers, names, types, labels, nesting, enum
    values; all of them, but for the model configuration's, which have a subset."""

    def check(ours, theirs) -> None:  # noqa: ANN001 (two protobuf Descriptors)
        for field in ours.fields:
            their = theirs.fields_by_number[field.number]
            assert (field.name, field.type, field.is_repeated, field.is_packed) == (
                their.name, their.type, their.is_repeated, their.is_packed), field.full_name
            if field.message_type:
                check(field.message_type, their.message_type)
            if field.enum_type:
                assert ([(v.name, v.number) for v in field.enum_type.values]
                        == [(v.name, v.number) for v in their.enum_type.values])
        if ours.name not in CONFIG_SUBSETS:
            assert len(ours.fields) == len(theirs.fields), ours.full_name

    theirs = {**triton_config_pb2.DESCRIPTOR.message_types_by_name,
              **triton_pb2.DESCRIPTOR.message_types_by_name}
    ours = pb.DESCRIPTOR.message_types_by_name
    assert len(ours) == 21
    for name, descriptor in ours.items():
        check(descriptor, theirs[name])
    assert set(CONFIG_SUBSETS) < set(ours)


def test_server_and_model_metadata(real: tuple[str, triton.InferenceServerClient, grpc.Channel]
                                   ) -> None:
    _, client, _ = real
    assert client.is_server_live() and client.is_server_ready()
    assert list(client.get_server_metadata().extensions) == [
        "binary_tensor_data", "model_repository", "model_configuration"]
    assert client.is_model_ready("perception") and client.is_model_ready("yolox-nano", "1")
    index = client.get_model_repository_index()
    assert [(m.name, m.version, m.state) for m in index.models] == [
        ("perception", "1", "READY"), ("yolox-nano", "1", "READY"), ("twinlitenet", "1", "READY")]
    meta = client.get_model_metadata("perception", as_json=True)
    assert [(t["name"], t["datatype"]) for t in meta["inputs"]] == [("image", "BYTES"),
                                                                    ("rgb", "UINT8")]
    assert meta["inputs"][1]["shape"] == ["-1", "-1", "3"]  # int64 in JSON: strings
    network = client.get_model_metadata("yolox-nano")
    assert network.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in network.inputs] == [
        ("images", "FP32", [1, 3, 416, 416])]
    with pytest.raises(InferenceServerException, match="unknown model 'nope'") as error:
        client.get_model_metadata("nope")
    assert error.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException, match="has no version '7'") as error:
        client.is_model_ready("perception", "7")
    assert error.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as error:  # a method not served
        client.get_inference_statistics("perception")
    assert error.value.status() == "StatusCode.UNIMPLEMENTED"


def test_model_config(real: tuple[str, triton.InferenceServerClient, grpc.Channel]) -> None:
    """Triton's ModelConfig (what perf_analyzer asks for first), decoded by Triton's own
    messages: the metadata's tensors with Triton's data types, the same as over HTTP."""
    base, client, _ = real
    config = client.get_model_config("perception").config
    assert (config.name, config.platform, config.backend, config.max_batch_size) == (
        "perception", "python", "python", 0)
    data_type = triton_config_pb2.DataType.Name
    assert [(t.name, data_type(t.data_type), list(t.dims), t.optional) for t in config.input] == [
        ("image", "TYPE_STRING", [1], True), ("rgb", "TYPE_UINT8", [-1, -1, 3], True)]
    assert [(t.name, data_type(t.data_type)) for t in config.output] == [
        ("boxes", "TYPE_FP32"), ("scores", "TYPE_FP32"), ("classes", "TYPE_INT32"),
        ("labels", "TYPE_STRING"), ("drivable", "TYPE_UINT8"), ("lanes", "TYPE_UINT8"),
        ("plan", "TYPE_STRING")]
    for name in ("perception", "yolox-nano", "twinlitenet"):
        config = client.get_model_config(name, "1").config
        meta = client.get_model_metadata(name)
        assert config.platform == meta.platform
        assert [(t.name, list(t.dims)) for t in [*config.input, *config.output]] == [
            (t.name, list(t.shape)) for t in [*meta.inputs, *meta.outputs]]
        over_http = httpx.get(f"{base}/v2/models/{name}/config", timeout=30).json()
        assert over_http["output"] == [
            {"name": t.name, "data_type": data_type(t.data_type), "dims": list(t.dims)}
            for t in config.output]
    network = client.get_model_config("yolox-nano").config
    assert (network.platform, network.backend, network.max_batch_size) == (
        "onnxruntime_onnx", "onnxruntime", 0)
    assert [(t.name, data_type(t.data_type), list(t.dims), t.optional)
            for t in network.input] == [("images", "TYPE_FP32", [1, 3, 416, 416], False)]
    with pytest.raises(InferenceServerException, match="unknown model 'nope'") as error:
        client.get_model_config("nope")
    assert error.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException, match="has no version '2'") as error:
        client.get_model_config("perception", "2")
    assert error.value.status() == "StatusCode.NOT_FOUND"


def test_infer_image_equals_our_api(real: tuple[str, triton.InferenceServerClient, grpc.Channel],
                                    jpeg: bytes) -> None:
    base, client, _ = real
    asked = [triton.InferRequestedOutput(name)
             for name in ("boxes", "scores", "classes", "labels", "drivable", "lanes")]
    result = client.infer("perception", [image_input(jpeg)], outputs=asked, request_id="g1")
    assert result.get_response().id == "g1"
    v1 = httpx.post(f"{base}/v1/perceive", content=jpeg, timeout=60,
                    headers={"content-type": "image/jpeg"}).json()
    assert_same_as_v1(result.as_numpy, v1)
    planned = client.infer("perception", [image_input(jpeg)], parameters={"camera": "bdd"})
    assert [o.name for o in planned.get_response().outputs][-1] == "plan"
    assert b'"status"' in planned.as_numpy("plan")[0]


def test_rgb_tensor_and_raw_network(real: tuple[str, triton.InferenceServerClient, grpc.Channel],
                                    jpeg: bytes) -> None:
    """twinlitenet alone on the chain's preprocessing of a frame decodes to the masks the
    perception model answers for the same pixels (given as an RGB tensor)."""
    _, client, _ = real
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    spec = next(s for s in real_server()[1].model_specs() if s.name == "twinlitenet")
    batch, _ = preprocess([bgr], spec.input)
    raw = client.infer("twinlitenet", [array_input("images", batch, "FP32")])
    drivable, lanes = decode_twinlitenet(raw.as_numpy("da"), raw.as_numpy("ll"))
    chain = client.infer("perception",
                         [array_input("rgb", np.ascontiguousarray(bgr[..., ::-1]), "UINT8")],
                         outputs=[triton.InferRequestedOutput("drivable"),
                                  triton.InferRequestedOutput("lanes")])
    np.testing.assert_array_equal(drivable[0], chain.as_numpy("drivable"))
    np.testing.assert_array_equal(lanes[0], chain.as_numpy("lanes"))


@pytest.mark.parametrize(("model", "inputs", "outputs", "message"), [
    ("perception", [("rgb", np.zeros((4, 4, 3), np.float32), "FP32")], None,
     "is FP32; the model takes UINT8"),
    ("perception", [("rgb", np.zeros((4, 4), np.uint8), "UINT8")], None, "has shape [4, 4]"),
    ("perception", [("image", np.array([b"no image"], object), "BYTES")], None, "image"),
    ("perception", [("frame", np.array([b"x"], object), "BYTES")], None,
     "has no input 'frame'"),
    ("perception", [("rgb", np.zeros((4, 4, 3), np.uint8), "UINT8")], ["mask"],
     "has no output 'mask'"),
    ("yolox-nano", [("images", np.zeros((1, 3, 8, 8), np.float32), "FP32")], None,
     "has shape [1, 3, 8, 8]"),
])
def test_bad_infer_requests_are_invalid_argument(
        real: tuple[str, triton.InferenceServerClient, grpc.Channel], model: str,
        inputs: list, outputs: list[str] | None, message: str) -> None:
    _, client, _ = real
    asked = [triton.InferRequestedOutput(name) for name in outputs or []] or None
    with pytest.raises(InferenceServerException) as error:
        client.infer(model, [array_input(*spec) for spec in inputs], outputs=asked)
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in error.value.message()


def tensor(name: str, datatype: str, shape: list[int], **contents
           ) -> pb.ModelInferRequest.InferInputTensor:
    return pb.ModelInferRequest.InferInputTensor(
        name=name, datatype=datatype, shape=shape,
        contents=pb.InferTensorContents(**contents) if contents else None)


@pytest.mark.parametrize(("request_", "message"), [
    (pb.ModelInferRequest(model_name="perception", inputs=[tensor("rgb", "UINT8", [2, 2, 3])],
                          raw_input_contents=[bytes(11)]), "11 bytes of data"),
    (pb.ModelInferRequest(model_name="perception", inputs=[tensor("rgb", "UINT8", [2, 2, 3])],
                          raw_input_contents=[bytes(12), bytes(12)]),
     "raw_input_contents has 2 entries for 1 inputs"),
    (pb.ModelInferRequest(model_name="perception", inputs=[tensor("image", "BYTES", [1])],
                          raw_input_contents=[b"\x09\x00\x00\x00jpeg"]),
     "runs past the data's end"),
    (pb.ModelInferRequest(model_name="perception", inputs=[
        tensor("rgb", "UINT8", [1, 1, 3], uint_contents=[1, 2, 256])]), "data is not UINT8"),
    (pb.ModelInferRequest(model_name="perception", inputs=[
        tensor("rgb", "UINT8", [1, 2, 3], uint_contents=[1, 2, 3])]), "3 elements of data"),
    (pb.ModelInferRequest(model_name="perception", inputs=[tensor("rgb", "FP16", [1])]),
     "FP16 data comes only in raw_input_contents"),
    (pb.ModelInferRequest(model_name="perception", inputs=[tensor("rgb", "BF16", [1])]),
     "datatype 'BF16' is not one of"),
    (pb.ModelInferRequest(model_name="perception", inputs=[tensor("rgb", "UINT8", [-1, 2, 3])]),
     "negative dimension"),
])
def test_malformed_requests_are_invalid_argument(
        real: tuple[str, triton.InferenceServerClient, grpc.Channel],
        request_: pb.ModelInferRequest, message: str) -> None:
    _, client, channel = real
    with pytest.raises(grpc.RpcError) as error:
        raw_infer(channel, request_)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.value.details()
    assert client.is_server_ready()


def test_typed_contents_and_a_payload_that_is_no_message(
        real: tuple[str, triton.InferenceServerClient, grpc.Channel]) -> None:
    _, _, channel = real
    gray = np.full((48, 64, 3), 128, np.uint8)
    answer = raw_infer(channel, pb.ModelInferRequest(
        model_name="perception", outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(
            name="drivable")],
        inputs=[tensor("rgb", "UINT8", [48, 64, 3], uint_contents=gray.reshape(-1).tolist())]))
    assert [(o.name, o.datatype) for o in answer.outputs] == [("drivable", "UINT8")]
    height, width = answer.outputs[0].shape
    assert len(answer.raw_output_contents[0]) == height * width > 0
    garbage = channel.unary_unary(INFER)  # raw bytes, no serializer
    with pytest.raises(grpc.RpcError) as error:
        garbage(b"\xff\xff\xff", timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_api_keys_and_resource_exhausted() -> None:
    """Keys as on our own service (ServerLive and ServerReady open, like health); a full
    batcher queue is RESOURCE_EXHAUSTED."""
    gate = threading.Event()
    perceiver = StatsPerceiver(gate)
    config = ServeConfig(api_keys=("s3cret",), grpc_port=0, max_batch=1, batch_workers=1,
                         queue_size=1, request_timeout_s=20)
    service = Service(config, lambda: perceiver)
    gate.set()
    with running_server(service) as (_, _, app):
        client = triton.InferenceServerClient(f"127.0.0.1:{app.state.grpc.port}")
        keyed = {"authorization": "Bearer s3cret"}
        assert client.is_server_live() and client.is_server_ready()
        with pytest.raises(InferenceServerException, match="API key") as error:
            client.get_model_metadata("perception")
        assert error.value.status() == "StatusCode.UNAUTHENTICATED"
        assert client.get_model_metadata("perception", headers=keyed).name == "perception"
        gate.clear()
        perceiver.entered.clear()
        with ThreadPoolExecutor(2) as pool:
            held = [pool.submit(client.infer, "perception", [image_input(solid_jpeg(v))],
                                headers=keyed) for v in (10,)]
            assert perceiver.entered.wait(60)
            held.append(pool.submit(client.infer, "perception",
                                    [image_input(solid_jpeg(30))], headers=keyed))
            deadline = time.monotonic() + 60  # a loaded 2-core machine may take its time
            while service.batcher.depth < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert service.batcher.depth == 1
            with pytest.raises(InferenceServerException, match="queue is full") as error:
                client.infer("perception", [image_input(solid_jpeg(50))], headers=keyed)
            assert error.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
            gate.set()
            scores = [future.result(30).as_numpy("scores")[0] for future in held]
        assert scores == pytest.approx([10 / 255, 30 / 255], abs=0.01)
        client.close()
