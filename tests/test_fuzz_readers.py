"""Fuzzing the readers of untrusted files with hypothesis: every outcome is a result or a
`PerceptionError` (a one-line exit 2 or 3, an HTTP 4xx), never another exception.

Targets, each with `CASES` cases from real seeds mutated at the byte or value level (flips,
random bytes, 32-bit integers over length fields, cuts, splices): image decoding
(`decode_image`: PNG, JPEG, BMP, WebP, TIFF), the MCAP reader (`open_log` on an MCAP written by
our Foxglove writer and one with zstd chunks), the rosbag2 reader (`open_log` on bags written
with rosbags, in mcap storage and, with fewer cases, sqlite3 storage), the camera loader
(`load_camera` on camera YAML text, `from_dict` on its data) and the model-spec loader
(`spec_from_yaml` on spec text, `spec_from_dict` on spec data). Derandomized (the same cases
on every run, no example database) and with a small pixel limit, so decoding stays cheap; the
whole file runs in about a minute on 2 cores (rosbags' sqlite3 reader gets fewer cases: it
parses the bag's metadata.yaml with ruamel on every open).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perception.driving.camera import from_dict, load_camera
from perception.errors import PerceptionError
from perception.frames import Frame, decode_image
from perception.logs.foxglove_writer import foxglove_mcap
from perception.logs.sources import open_log
from perception.zoo.registry import get_spec, spec_from_dict, spec_from_yaml

CASES = 2000
SQLITE3_CASES = 300  # rosbags parses metadata.yaml with ruamel on every open: ~30 ms a case
MAX_PIXELS = 100_000  # a mutated header may declare up to this much: cheap to decode
REPO = Path(__file__).resolve().parents[1]
FUZZ = settings(max_examples=CASES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def outcome(read: Callable[[], object]) -> str:
    """'result' or the PerceptionError subclass's name; any other exception propagates."""
    try:
        read()
    except PerceptionError as error:
        return type(error).__name__
    return "result"


def fuzz(target: Callable[[object], object], values: st.SearchStrategy, cases: int = CASES
         ) -> Counter:
    """Run `target` on `cases` values; the outcomes counted."""
    outcomes: Counter = Counter()

    @settings(FUZZ, max_examples=cases)
    @given(values)
    def case(value: object) -> None:
        outcomes[outcome(lambda: target(value))] += 1

    case()
    assert sum(outcomes.values()) >= cases, outcomes
    print(f"\n{sum(outcomes.values())} cases: {dict(outcomes)}")
    return outcomes


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with a few byte-level mutations."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, max(0, len(data) - 1)))
        kind = draw(st.sampled_from(["flip", "byte", "int32", "cut", "splice", "zero"]))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "int32":
            value = draw(st.sampled_from([0, 1, 0x7F, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF,
                                          len(data), len(data) + 1]))
            data[at:at + 4] = value.to_bytes(4, draw(st.sampled_from(["little", "big"])))
        elif kind == "cut":
            del data[at:]
        elif kind == "splice":
            start = draw(st.integers(0, max(0, len(data) - 1)))
            data[at:at] = data[start:start + draw(st.integers(1, 64))]
        elif kind == "zero":
            data[at:at + draw(st.integers(1, 256))] = bytes(min(256, len(data) - at))
    return bytes(data)


SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats()
           | st.text(max_size=8))
JSON_VALUES = SCALARS | st.lists(SCALARS, max_size=4) | st.dictionaries(
    st.text(max_size=6), SCALARS, max_size=3)  # flat: hypothesis's recursive trees cost ms


@st.composite
def mutated_tree(draw: st.DrawFn, tree: object) -> object:
    """A copy of a JSON-like tree with a few values replaced, keys added or removed."""
    tree = json.loads(json.dumps(tree))
    for _ in range(draw(st.integers(1, 4))):
        parent, key, node = None, None, tree
        while isinstance(node, dict | list) and node and draw(st.booleans()):
            parent, key = node, draw(st.sampled_from(list(node) if isinstance(node, dict)
                                                     else list(range(len(node)))))
            node = node[key]
        action = draw(st.sampled_from(["replace", "add", "remove"]))
        if action == "add" and isinstance(node, dict):
            node[draw(st.text(max_size=6))] = draw(JSON_VALUES)
        elif action == "remove" and isinstance(node, dict | list) and node:
            del node[draw(st.sampled_from(list(node) if isinstance(node, dict)
                                          else list(range(len(node)))))]
        elif parent is not None:
            parent[key] = draw(JSON_VALUES)
        else:
            tree = draw(JSON_VALUES)
    return tree


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """One folder for the files of all cases (hypothesis runs many cases per test call)."""
    folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def small_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (12, 16, 3), np.uint8)


# ---------------------------------------------------------------- image decoding

def test_fuzz_decode_image() -> None:
    image = small_image()
    seeds = [cv2.imencode(suffix, image, params)[1].tobytes()
             for suffix, params in [(".png", []), (".jpg", []), (".bmp", []),
                                    (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),
                                    (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), (".tif", [])]]
    outcomes = fuzz(lambda data: decode_image(data, "fuzz", MAX_PIXELS), mutated(seeds))
    assert outcomes["result"] and outcomes["SourceError"] and outcomes["PixelLimitError"]


# ---------------------------------------------------------------- drive logs

def read_log(path: Path) -> int:
    return sum(1 for _ in open_log(path, max_pixels=MAX_PIXELS))


def test_fuzz_mcap(scratch: Path) -> None:
    from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
    from mcap.writer import CompressionType
    from mcap_protobuf.writer import Writer

    ours = scratch / "ours.mcap"
    with foxglove_mcap(ours) as writer:
        for index in range(3):
            writer.write(Frame(small_image(index), timestamp=index / 10, index=index,
                               source="fuzz"))
    zstd = scratch / "zstd.mcap"
    with open(zstd, "wb") as file:
        writer = Writer(file, compression=CompressionType.ZSTD)
        for index in range(3):
            png = cv2.imencode(".png", small_image(index))[1].tobytes()
            writer.write_message("/camera/image", CompressedImage(data=png, format="png"),
                                 log_time=index * 10**8, publish_time=index * 10**8)
        writer.finish()
    assert read_log(ours) == read_log(zstd) == 3
    case = scratch / "case.mcap"

    def read(data: bytes) -> int:
        case.write_bytes(data)
        return read_log(case)

    outcomes = fuzz(read, mutated([ours.read_bytes(), zstd.read_bytes()]))
    assert outcomes["result"] and outcomes["CorruptRecordError"]


def rosbag2(path: Path, storage: str) -> Path:
    """A rosbag2 of three PNG `sensor_msgs/msg/CompressedImage`, written with rosbags; the
    file that holds the messages."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    Compressed = store.types["sensor_msgs/msg/CompressedImage"]
    with Writer(path, version=8, storage_plugin=StoragePlugin[storage.upper()]) as writer:
        connection = writer.add_connection("/cam/image/compressed", Compressed.__msgtype__,
                                           typestore=store)
        for index in range(3):
            t = 1_700_000_000_000_000_000 + index * 10**8
            header = Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id="cam")
            png = cv2.imencode(".png", small_image(index))[1].ravel()
            writer.write(connection, t, store.serialize_cdr(
                Compressed(header=header, format="png", data=png), Compressed.__msgtype__))
    assert read_log(path) == 3
    return next(path.glob(f"*.{'db3' if storage == 'sqlite3' else 'mcap'}"))


@pytest.mark.parametrize(("storage", "cases"), [("mcap", CASES), ("sqlite3", SQLITE3_CASES)])
def test_fuzz_rosbag2(storage: str, cases: int, scratch: Path) -> None:
    """The bag's one storage file mutated (its metadata.yaml kept)."""
    messages = rosbag2(scratch / f"bag-{storage}", storage)
    seed = messages.read_bytes()

    def read(data: bytes) -> int:
        messages.write_bytes(data)
        return read_log(messages.parent)

    outcomes = fuzz(read, mutated([seed]), cases)
    assert outcomes["result"]


# ---------------------------------------------------------------- camera and spec files

CAMERA_FILE = REPO / "perception" / "cameras" / "udacity_960x540.yaml"


def test_fuzz_camera_file(scratch: Path) -> None:
    path = scratch / "camera.yaml"

    def load(text: bytes) -> object:
        path.write_bytes(text)
        return load_camera(path)

    seed = yaml.safe_dump(yaml.safe_load(CAMERA_FILE.read_text())).encode()  # no comments
    outcomes = fuzz(load, mutated([seed]))
    assert outcomes["result"]


def test_fuzz_camera_data() -> None:
    data = yaml.safe_load(CAMERA_FILE.read_text())
    outcomes = fuzz(lambda tree: from_dict(tree, "fuzz"), mutated_tree(data))
    assert outcomes["result"]


def spec_data() -> dict:
    data = json.loads(json.dumps(get_spec("yolox-nano").to_dict()))
    data["classes"] = data["classes"][:3]
    return data | {"file": "model.onnx", "sha256": "", "url": ""}


def test_fuzz_spec_file(scratch: Path) -> None:
    (scratch / "model.onnx").write_bytes(b"model")
    path = scratch / "spec.yaml"

    def load(text: bytes) -> object:
        path.write_bytes(text)
        return spec_from_yaml(path)

    seed = yaml.safe_dump(spec_data(), sort_keys=False).encode()
    outcomes = fuzz(load, mutated([seed]))
    assert outcomes["result"] and outcomes["ModelError"]


def test_fuzz_spec_data() -> None:
    outcomes = fuzz(lambda tree: spec_from_dict(tree, "fuzz"), mutated_tree(spec_data()))
    assert outcomes["result"] and outcomes["ModelError"]
