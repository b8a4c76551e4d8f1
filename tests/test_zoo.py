"""The model zoo: registry, mirror folder and URL, and the real download path over HTTP.

Downloads come from a real HTTP server on 127.0.0.1 (http.server in a thread) serving a temp
copy of the shared models folder; it can cut its first response short to exercise the resume.
Nothing is fetched from the internet.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from perception.errors import PerceptionError
from perception.frames import open_source
from perception.zoo import registry as zoo

MANIFEST_SHA256 = {
    "yolox-nano": "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14",
    "fastestdet": "31cb14c017fce347cb4c846ec62fdf00d76bb3beecdf4be21e7116ac67feb880",
    "twinlitenet": "f505b56bd7c9e4e38b2928373aa4daa191a9a398e07e1fb340024b9ce84d4285",
}


class ModelServer:
    """Serves a folder over HTTP with Range support; `cut_first` drops the first response
    after half its bytes; `requests` records (path, Range header) of every GET."""

    def __init__(self, root: Path) -> None:
        self.root, self.cut_first, self.requests = root, False, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append((self.path, self.headers.get("Range")))
                file = server.root / self.path.lstrip("/")
                if not file.is_file():
                    self.send_error(404)
                    return
                data = file.read_bytes()
                start = 0
                if self.headers.get("Range", "").startswith("bytes="):
                    start = int(self.headers["Range"][6:].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_first:
                    server.cut_first = False
                    self.wfile.write(body[:len(body) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path: Path, models_mirror: Path) -> Iterator[ModelServer]:
    root = tmp_path / "served"
    shutil.copytree(models_mirror, root)
    server = ModelServer(root)
    yield server
    server.close()


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("PERCEPTION_CACHE_DIR", str(cache))
    monkeypatch.delenv("PERCEPTION_MODELS_MIRROR", raising=False)
    return cache


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_registry_matches_the_manifest() -> None:
    specs = zoo.registry()
    assert {name: spec.sha256 for name, spec in specs.items()} == MANIFEST_SHA256
    yolox, fastest, twin = specs["yolox-nano"], specs["fastestdet"], specs["twinlitenet"]
    assert (yolox.input.resize, yolox.input.letterbox_anchor, yolox.input.pad_value,
            yolox.input.color, yolox.input.scale) == ("letterbox", "top_left", 114, "bgr", 1.0)
    assert (fastest.input.resize, fastest.input.color, fastest.input.width) == \
        ("stretch", "bgr", 352)
    assert (twin.input.width, twin.input.height, twin.input.color) == (640, 360, "rgb")
    assert len(yolox.classes) == 80 and yolox.classes[11] == "stop sign"
    for spec in specs.values():
        assert len(spec.url.split("/")) > 6 and any(len(part) == 40 for part in
                                                   spec.url.split("/")), spec.url


def test_unknown_model_name() -> None:
    with pytest.raises(zoo.ModelError, match="unknown model 'yolo-huge'"):
        zoo.resolve("yolo-huge")


def test_pull_over_http(served: ModelServer, empty_cache: Path) -> None:
    path = zoo.pull("fastestdet", served.url)
    assert path == empty_cache / "fastestdet" / "FastestDet.onnx"
    assert sha256(path) == MANIFEST_SHA256["fastestdet"]
    assert leftovers(empty_cache) == ["FastestDet.onnx"]
    assert zoo.resolve("fastestdet") == (zoo.get_spec("fastestdet"), path)  # now cached


def test_resume_after_dropped_connection(served: ModelServer, empty_cache: Path) -> None:
    served.cut_first = True
    path = zoo.pull("yolox-nano", served.url)
    assert sha256(path) == MANIFEST_SHA256["yolox-nano"]
    (first, _), (second, range_header) = served.requests
    assert first == second == "/yolox_nano/yolox_nano.onnx"
    half = (served.root / "yolox_nano" / "yolox_nano.onnx").stat().st_size // 2
    assert range_header == f"bytes={half}-"  # asked only for the missing half
    assert leftovers(empty_cache) == ["yolox_nano.onnx"]


def test_bad_checksum_leaves_nothing(served: ModelServer, empty_cache: Path) -> None:
    served_file = served.root / "twinlitenet" / "twinlitenet_best.onnx"
    data = bytearray(served_file.read_bytes())
    data[1000] ^= 0xFF
    served_file.write_bytes(bytes(data))
    with pytest.raises(zoo.ModelError, match="sha256"):
        zoo.pull("twinlitenet", served.url)
    assert leftovers(empty_cache) == []
    with pytest.raises(zoo.ModelError, match="sha256"):  # the resolve path says the same
        zoo.resolve("twinlitenet", served.url)
    assert leftovers(empty_cache) == []


def test_missing_on_server(served: ModelServer, empty_cache: Path) -> None:
    (served.root / "fastestdet" / "FastestDet.onnx").unlink()
    with pytest.raises(zoo.ModelError, match="HTTP 404"):
        zoo.pull("fastestdet", served.url)
    assert leftovers(empty_cache) == []


def test_mirror_folder(models_mirror: Path, empty_cache: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    spec, path = zoo.resolve("yolox-nano", str(models_mirror))  # used in place
    assert path == models_mirror / "yolox_nano" / "yolox_nano.onnx"
    monkeypatch.setenv("PERCEPTION_MODELS_MIRROR", str(models_mirror))
    pulled = zoo.pull("twinlitenet")  # pull copies into the cache
    assert pulled == empty_cache / "twinlitenet" / "twinlitenet_best.onnx"
    assert sha256(pulled) == MANIFEST_SHA256["twinlitenet"]


def test_cached_file_with_wrong_checksum(empty_cache: Path) -> None:
    bad = empty_cache / "fastestdet" / "FastestDet.onnx"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not the model")
    with pytest.raises(zoo.ModelError, match="sha256 does not match"):
        zoo.resolve("fastestdet")


def fastestdet_spec_dict() -> dict:
    data = zoo.get_spec("fastestdet").to_dict()
    return json.loads(json.dumps(data))


def test_user_model_from_spec_yaml(tmp_path: Path, models_mirror: Path, drives: Path) -> None:
    import yaml

    from perception.pipeline import Perceiver

    shutil.copy(models_mirror / "fastestdet" / "FastestDet.onnx", tmp_path / "mine.onnx")
    data = fastestdet_spec_dict() | {"file": "mine.onnx", "url": ""}
    del data["name"]
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(data))
    spec, path = zoo.resolve(str(tmp_path / "mine.yaml"))
    assert spec.name == "mine" and path == (tmp_path / "mine.onnx").resolve()
    frames = list(open_source(str(drives / "bdd100k_frames" / "yolop" / "3c0e7240-96e390d2.jpg")))
    with Perceiver([(spec, path)]) as mine, Perceiver.from_names(["fastestdet"]) as zoo_model:
        ours, reference = mine.perceive(frames)[0], zoo_model.perceive(frames)[0]
    assert ours.detections == reference.detections and ours.detections
    assert ours.models == ["mine"]


def test_spec_yaml_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("file: missing.onnx\ntask: detection\n")
    with pytest.raises(zoo.ModelError, match="not a valid model spec"):
        zoo.resolve(str(tmp_path / "bad.yaml"))
    with pytest.raises(zoo.ModelError, match="no such spec file"):
        zoo.resolve(str(tmp_path / "absent.yaml"))


def test_corrupt_user_onnx(tmp_path: Path) -> None:
    import yaml

    from perception.pipeline import Perceiver

    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07garbage" * 100)
    data = fastestdet_spec_dict() | {"file": "broken.onnx", "sha256": ""}
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(PerceptionError, match="cannot load ONNX model"):
        Perceiver.from_names([str(tmp_path / "broken.yaml")])
    with pytest.raises(PerceptionError, match="cannot load ONNX model"):
        zoo.resolve(str(tmp_path / "broken.onnx"))


def test_onnx_carrying_its_spec(tmp_path: Path, models_mirror: Path) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(models_mirror / "fastestdet" / "FastestDet.onnx"))
    without = tmp_path / "plain.onnx"
    onnx.save(model, str(without))
    with pytest.raises(zoo.ModelError, match="perception.spec"):
        zoo.resolve(str(without))
    entry = model.metadata_props.add()
    entry.key, entry.value = zoo.SPEC_METADATA_KEY, json.dumps(
        fastestdet_spec_dict() | {"name": "ours"})
    path = tmp_path / "ours.onnx"
    onnx.save(model, str(path))
    spec, resolved = zoo.resolve(str(path))
    assert resolved == path and spec.name == "ours" and spec.decoder == "fastestdet"
    assert spec.input == zoo.get_spec("fastestdet").input


def test_models_command(served: ModelServer, empty_cache: Path,
                        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import sys

    from perception.cli import main

    def models(*argv: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["perception"])
        code = main(["models", *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, out, _ = models("list")
    assert code == 0 and "yolox-nano" in out and "twinlitenet" in out and " no " in out
    code, out, _ = models("pull", "fastestdet", "--mirror", served.url)
    assert code == 0 and str(empty_cache / "fastestdet" / "FastestDet.onnx") in out
    code, out, _ = models("info", "fastestdet")
    assert code == 0 and "decoder: fastestdet" in out and "FastestDet.onnx" in out
    assert "local_file: " + str(empty_cache) in out
    code, _, err = models("pull", "nope")
    assert code == 2 and err.startswith("perception: error: unknown model 'nope'")
