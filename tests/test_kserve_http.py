"""The KServe v2 HTTP protocol, spoken by Triton's own client (tritonclient.http), unmodified.

One real server (real models, real uvicorn on 127.0.0.1) for the module; the answers are
compared with our own `/v1/perceive` for the same image. Malformed bodies that tritonclient
would never send (a wrong header length, truncated binary data) go over plain httpx.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from serving_harness import (
    BDD,
    StatsPerceiver,
    assert_same_as_v1,
    real_server,
    running_server,
    solid_jpeg,
)
from tritonclient.utils import InferenceServerException

from perception.decode import decode_twinlitenet
from perception.preprocess import preprocess
from serving.service import ServeConfig, Service


@pytest.fixture(scope="module")
def real(models_mirror: Path) -> tuple[str, triton.InferenceServerClient]:
    base = real_server()[0]
    client = triton.InferenceServerClient(base.removeprefix("http://"), network_timeout=120)
    yield base, client
    client.close()


@pytest.fixture(scope="module")
def jpeg(assets: Path) -> bytes:
    return sorted((assets / BDD).glob("*.jpg"))[0].read_bytes()


def image_input(data: bytes, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([data], dtype=object), binary_data=binary)
    return tensor


def rgb_input(rgb: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput("rgb", list(rgb.shape), "UINT8")
    tensor.set_data_from_numpy(rgb)
    return tensor


def perceive_v1(base: str, data: bytes, query: str = "", content_type: str = "image/jpeg"
                ) -> dict:
    answer = httpx.post(f"{base}/v1/perceive{query}", content=data, timeout=60,
                        headers={"content-type": content_type})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_server_health_metadata_and_repository(real: tuple[str, triton.InferenceServerClient]
                                               ) -> None:
    base, client = real
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata()["extensions"] == [
        "binary_tensor_data", "model_repository", "model_configuration"]
    index = client.get_model_repository_index()
    assert [(m["name"], m["state"]) for m in index] == [
        ("perception", "READY"), ("yolox-nano", "READY"), ("twinlitenet", "READY")]
    assert client.is_model_ready("perception") and client.is_model_ready("twinlitenet", "1")
    meta = client.get_model_metadata("perception")
    assert meta["versions"] == ["1"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("image", "BYTES", [1]), ("rgb", "UINT8", [-1, -1, 3])]
    assert [t["name"] for t in meta["outputs"]] == [
        "boxes", "scores", "classes", "labels", "drivable", "lanes", "plan"]
    network = client.get_model_metadata("twinlitenet", "1")  # as ONNX Runtime reports it
    assert network["platform"] == "onnxruntime_onnx"
    assert network["inputs"] == [{"name": "images", "datatype": "FP32",
                                  "shape": [1, 3, 360, 640]}]
    assert [(t["name"], t["shape"]) for t in network["outputs"]] == [
        ("da", [1, 2, 360, 640]), ("ll", [1, 2, 360, 640])]
    with pytest.raises(InferenceServerException, match="unknown model 'nope'") as error:
        client.get_model_metadata("nope")
    assert error.value.status() == "404"
    with pytest.raises(InferenceServerException, match="has no version '2'") as error:
        client.get_model_metadata("perception", "2")
    assert error.value.status() == "404"
    assert not client.is_model_ready("nope")
    assert httpx.get(f"{base}/v2/health/live").json() == {"live": True}


def test_model_config(real: tuple[str, triton.InferenceServerClient]) -> None:
    """Triton's model configuration (what perf_analyzer asks for first): the metadata's
    tensors with Triton's data types, no batch dimension of Triton's kind."""
    base, client = real
    config = client.get_model_config("perception")
    assert (config["name"], config["platform"], config["backend"], config["max_batch_size"]) == (
        "perception", "python", "python", 0)
    assert config["input"] == [
        {"name": "image", "data_type": "TYPE_STRING", "dims": [1], "optional": True},
        {"name": "rgb", "data_type": "TYPE_UINT8", "dims": [-1, -1, 3], "optional": True}]
    meta = client.get_model_metadata("perception")
    assert config["platform"] == meta["platform"]
    assert [(t["name"], t["dims"]) for t in config["output"]] == [
        (t["name"], t["shape"]) for t in meta["outputs"]]
    assert [t["data_type"] for t in config["output"]] == [
        "TYPE_FP32", "TYPE_FP32", "TYPE_INT32", "TYPE_STRING", "TYPE_UINT8", "TYPE_UINT8",
        "TYPE_STRING"]
    assert client.get_model_config("twinlitenet", "1") == {  # as ONNX Runtime reports it
        "name": "twinlitenet", "platform": "onnxruntime_onnx", "backend": "onnxruntime",
        "max_batch_size": 0,
        "input": [{"name": "images", "data_type": "TYPE_FP32", "dims": [1, 3, 360, 640],
                   "optional": False}],
        "output": [{"name": "da", "data_type": "TYPE_FP32", "dims": [1, 2, 360, 640]},
                   {"name": "ll", "data_type": "TYPE_FP32", "dims": [1, 2, 360, 640]}]}
    with pytest.raises(InferenceServerException, match="unknown model 'nope'") as error:
        client.get_model_config("nope")
    assert error.value.status() == "404"
    answer = httpx.get(f"{base}/v2/models/perception/versions/2/config")
    assert answer.status_code == 404
    assert answer.json()["error"] == "model 'perception' has no version '2' (versions: 1)"


def test_infer_image_equals_our_api(real: tuple[str, triton.InferenceServerClient],
                                    jpeg: bytes) -> None:
    base, client = real
    # All outputs, the plan among them: as /v1 with a plan, road users and mask pixels on the
    # car's hood are left out (the planner's hood check).
    result = client.infer("perception", [image_input(jpeg)])
    v1 = perceive_v1(base, jpeg, "?outputs=detections,masks,plan")
    assert_same_as_v1(result.as_numpy, v1)
    plan = json.loads(result.as_numpy("plan")[0])
    assert plan["status"] in ("ok", "degraded", "safe_stop") and "control" in plan
    assert plan.keys() == v1["plan"].keys()
    # Without the plan, JSON outputs beside binary ones, the camera as a parameter, an id
    asked = [triton.InferRequestedOutput(name, binary_data=name in ("drivable", "lanes"))
             for name in ("boxes", "scores", "classes", "labels", "drivable", "lanes")]
    plain = client.infer("perception", [image_input(jpeg)], outputs=asked,
                         parameters={"camera": "bdd"}, request_id="frame-7")
    assert plain.get_response()["id"] == "frame-7"
    assert "data" in plain.get_output("scores") and "data" not in plain.get_output("lanes")
    assert_same_as_v1(plain.as_numpy, perceive_v1(base, jpeg))


def test_infer_rgb_tensor_equals_our_api_on_the_same_pixels(
        real: tuple[str, triton.InferenceServerClient], jpeg: bytes) -> None:
    base, client = real
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    result = client.infer("perception", [rgb_input(np.ascontiguousarray(bgr[..., ::-1]))],
                          model_version="1")
    png = cv2.imencode(".png", bgr)[1].tobytes()  # a PNG decodes to the same pixels
    assert_same_as_v1(result.as_numpy, perceive_v1(base, png, "?outputs=detections,masks,plan",
                                          "image/png"))


def test_raw_network_matches_the_chain(real: tuple[str, triton.InferenceServerClient],
                                       jpeg: bytes) -> None:
    """twinlitenet alone, on the chain's own preprocessing of a frame: its raw outputs decode
    to the masks the perception model answers for the same pixels."""
    _, client = real
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    meta = client.get_model_metadata("twinlitenet")["inputs"][0]
    spec = next(s for s in real_server()[1].model_specs() if s.name == "twinlitenet")
    batch, _ = preprocess([bgr], spec.input)
    assert list(batch.shape) == meta["shape"]
    tensor = triton.InferInput(meta["name"], list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    raw = client.infer("twinlitenet", [tensor])
    da, ll = raw.as_numpy("da"), raw.as_numpy("ll")
    assert da.dtype == np.float32 and da.shape[0] == 1
    drivable, lanes = decode_twinlitenet(da, ll)
    chain = client.infer("perception", [rgb_input(np.ascontiguousarray(bgr[..., ::-1]))],
                         outputs=[triton.InferRequestedOutput("drivable"),
                                  triton.InferRequestedOutput("lanes")])
    np.testing.assert_array_equal(drivable[0], chain.as_numpy("drivable"))
    np.testing.assert_array_equal(lanes[0], chain.as_numpy("lanes"))
    only_ll = client.infer("twinlitenet", [tensor], outputs=[triton.InferRequestedOutput("ll")])
    np.testing.assert_allclose(only_ll.as_numpy("ll"), ll, atol=1e-5)
    assert only_ll.as_numpy("da") is None


def rgb(shape: tuple[int, ...], datatype: str = "UINT8") -> triton.InferInput:
    tensor = triton.InferInput("rgb", list(shape), datatype)
    tensor.set_data_from_numpy(np.zeros(shape, triton.triton_to_np_dtype(datatype)))
    return tensor


@pytest.mark.parametrize(("model", "inputs", "outputs", "message"), [
    ("perception", lambda jpeg: [rgb((4, 4, 3), "INT32")], None, "is INT32; the model takes UINT8"),
    ("perception", lambda jpeg: [rgb((4, 4, 4))], None, "has shape [4, 4, 4]"),
    ("perception", lambda jpeg: [rgb((0, 4, 3))], None, "no pixels"),
    ("perception", lambda jpeg: [image_input(jpeg), rgb((4, 4, 3))], None, "exactly one input"),
    ("perception", lambda jpeg: [image_input(b"not an image")], None, "image"),
    ("perception", lambda jpeg: [image_input(jpeg[: len(jpeg) // 3])], None, "truncated"),
    ("perception", lambda jpeg: [triton.InferInput("pixels", [1], "BYTES")], None,
     "has no input 'pixels'"),
    ("perception", lambda jpeg: [image_input(jpeg)], ["bboxes"], "has no output 'bboxes'"),
    ("twinlitenet", lambda jpeg: [rgb((4, 4, 3))], None, "has no input 'rgb'"),
])
def test_bad_infer_requests_are_400(real: tuple[str, triton.InferenceServerClient], jpeg: bytes,
                                    model: str, inputs, outputs, message: str) -> None:
    _, client = real
    inputs = inputs(jpeg)
    for tensor in inputs:
        if tensor.name() == "pixels":
            tensor.set_data_from_numpy(np.array([b"x"], dtype=object))
    asked = [triton.InferRequestedOutput(name) for name in outputs or []] or None
    with pytest.raises(InferenceServerException) as error:
        client.infer(model, inputs, outputs=asked)
    assert error.value.status() == "400", error.value
    assert message in error.value.message()


def test_wrong_network_input_shape_and_unknown_model(
        real: tuple[str, triton.InferenceServerClient]) -> None:
    _, client = real
    name = client.get_model_metadata("twinlitenet")["inputs"][0]["name"]
    tensor = triton.InferInput(name, [1, 3, 10, 10], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3, 10, 10), np.float32))
    with pytest.raises(InferenceServerException, match=r"has shape \[1, 3, 10, 10\]") as error:
        client.infer("twinlitenet", [tensor])
    assert error.value.status() == "400"
    with pytest.raises(InferenceServerException, match="unknown model 'nope'") as error:
        client.infer("nope", [tensor])
    assert error.value.status() == "404"


def post_v2(base: str, body: bytes, header_length: int | str | None = None,
            headers: dict[str, str] | None = None) -> httpx.Response:
    headers = dict(headers or {})
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = str(header_length)
    return httpx.post(f"{base}/v2/models/perception/infer", content=body, headers=headers,
                      timeout=60)


def binary_request(tensors: list[dict], binary: bytes) -> tuple[bytes, int]:
    header = json.dumps({"inputs": tensors}).encode()
    return header + binary, len(header)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: binary_request([{"name": "rgb", "shape": [2, 2, 3], "datatype": "UINT8",
                              "parameters": {"binary_data_size": 12}}], bytes(11)),
     "binary_data_size 12 runs past the body's end (11 bytes left)"),
    (lambda: binary_request([{"name": "rgb", "shape": [2, 2, 3], "datatype": "UINT8",
                              "parameters": {"binary_data_size": 11}}], bytes(11)),
     "11 bytes of data, but UINT8 [2, 2, 3] needs 12"),
    (lambda: binary_request([{"name": "rgb", "shape": [2, 2, 3], "datatype": "UINT8",
                              "parameters": {"binary_data_size": 12}}], bytes(13)),
     "1 bytes of binary data follow"),
    (lambda: binary_request([{"name": "image", "shape": [1], "datatype": "BYTES",
                              "parameters": {"binary_data_size": 6}}], b"\x10\x00\x00\x00ab"),
     "a BYTES element of 16 bytes runs past the data's end"),
    (lambda: binary_request([{"name": "image", "shape": [1], "datatype": "BYTES",
                              "parameters": {"binary_data_size": 2}}], b"\x10\x00"),
     "ends inside an element's 4-byte length"),
    (lambda: (b'{"inputs": []}', 999), "Inference-Header-Content-Length 999 does not fit"),
    (lambda: (b'{"inputs": []}', "ten"), "'ten' is not a byte count"),
    (lambda: (b'{"inputs": [{"name": "rgb", "shape": [1, 1, 3], "datatype": "UINT8", '
              b'"data": [1, 2, 300]}]}', None), "data is not UINT8"),
    (lambda: (b'{"inputs": [{"name": "rgb", "shape": [1, 2, 3], "datatype": "UINT8", '
              b'"data": [1, 2, 3]}]}', None), "3 elements of data, but shape [1, 2, 3] has 6"),
    (lambda: (b'{"inputs": [{"name": "rgb", "shape": [1, 1, 3], "datatype": "BF16", '
              b'"data": [1, 2, 3]}]}', None), "datatype 'BF16' is not one of"),
    (lambda: (b'{"inputs": [{"name": "rgb", "shape": [1, 1, 3], "datatype": "UINT8"}]}', None),
     "has neither data nor"),
    (lambda: (b'{"inputs": "rgb"}', None), "inputs: Input should be a valid list"),
    (lambda: (b'{"inputs": [', None), "is not JSON"),
])
def test_malformed_bodies_are_400_json(real: tuple[str, triton.InferenceServerClient], make,
                                       message: str) -> None:
    base, client = real
    body, length = make()
    answer = post_v2(base, body, length)
    assert answer.status_code == 400 and answer.headers["content-type"] == "application/json"
    assert message in answer.json()["error"], answer.json()
    assert client.is_server_ready()


def test_json_only_infer_and_compressed_body(real: tuple[str, triton.InferenceServerClient]
                                             ) -> None:
    """A request without the binary extension (the protocol's plain JSON), answered in JSON."""
    base, _ = real
    gray = np.full((48, 64, 3), 128, np.uint8)
    body = {"id": "j", "inputs": [{"name": "rgb", "shape": list(gray.shape),
                                   "datatype": "UINT8", "data": gray.reshape(-1).tolist()}],
            "outputs": [{"name": "drivable"}]}
    answer = httpx.post(f"{base}/v2/models/perception/versions/1/infer", json=body, timeout=60)
    assert answer.status_code == 200 and "inference-header-content-length" not in answer.headers
    output = answer.json()["outputs"][0]
    assert output["name"] == "drivable" and output["datatype"] == "UINT8"
    assert len(output["data"]) == output["shape"][0] * output["shape"][1] > 0
    compressed = httpx.post(f"{base}/v2/models/perception/infer", content=b"x", timeout=10,
                            headers={"content-encoding": "gzip"})
    assert compressed.status_code == 415 and "Content-Encoding" in compressed.json()["error"]
    index = httpx.post(f"{base}/v2/repository/index", json={"ready": "yes"}, timeout=10)
    assert index.status_code == 400 and "ready" in index.json()["error"]


def test_api_keys_pixel_limit_and_queue_full() -> None:
    """A small stand-in model: keys as on /v1 (health open), 413 over --max-pixels, 503 with
    Retry-After when the batcher's queue is full."""
    gate = threading.Event()
    perceiver = StatsPerceiver(gate)
    config = ServeConfig(api_keys=("s3cret",), max_pixels=64 * 48, max_batch=1,
                         batch_workers=1, queue_size=1, request_timeout_s=20)
    service = Service(config, lambda: perceiver)
    gate.set()
    with running_server(service) as (base, _, _):
        url = base.removeprefix("http://")
        keyed = {"Authorization": "Bearer s3cret"}
        client = triton.InferenceServerClient(url, concurrency=4)
        assert client.is_server_live() and client.is_server_ready()
        with pytest.raises(InferenceServerException, match="API key") as error:
            client.get_model_metadata("perception")
        assert error.value.status() == "401"
        meta = client.get_model_metadata("perception", headers=keyed)
        # a detector alone, no camera: no masks, no plan
        assert [t["name"] for t in meta["outputs"]] == ["boxes", "scores", "classes", "labels"]
        with pytest.raises(InferenceServerException, match="limit is 3072 pixels") as error:
            client.infer("perception", [rgb((64, 64, 3))], headers=keyed)
        assert error.value.status() == "413"
        gate.clear()
        perceiver.entered.clear()
        held = [client.async_infer("perception", [image_input(solid_jpeg(10))], headers=keyed)]
        assert perceiver.entered.wait(60)
        held.append(client.async_infer("perception", [rgb((48, 64, 3))], headers=keyed))
        deadline = time.monotonic() + 60  # a loaded 2-core machine may take its time
        while service.batcher.depth < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert service.batcher.depth == 1
        image = solid_jpeg(20)
        body, length = binary_request([{"name": "image", "shape": [1], "datatype": "BYTES",
                                        "parameters": {"binary_data_size": 4 + len(image)}}],
                                      len(image).to_bytes(4, "little") + image)
        refused = post_v2(base, body, length, headers=keyed)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "queue is full" in refused.json()["error"]
        gate.set()
        scores = [future.get_result(timeout=30).as_numpy("scores")[0] for future in held]
        assert scores == pytest.approx([10 / 255, 0.0], abs=0.01)
        client.close()
