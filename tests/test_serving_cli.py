"""`perception serve` refuses bad options before starting: exit code 2 and one line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from perception.cli import main

BDD_CAMERA = Path(__file__).resolve().parents[1] / "perception/cameras/bdd100k_1280x720.yaml"


@pytest.mark.parametrize(("extra", "words"), [
    (["--models", "nope-net"], "unknown model 'nope-net'"),
    (["--models", ""], "--models names no model"),
    (["--max-batch", "0"], "--max-batch must be at least 1"),
    (["--batch-workers", "0"], "--batch-workers must be at least 1"),
    (["--max-delay-ms", "-1"], "--max-delay-ms must be >= 0"),
    (["--api-key-file", "/no/such/keys.txt"], "no such API key file"),
    (["--camera", "front"], "expected NAME=camera.yaml"),
    (["--camera", "front=/no/such.yaml"], "is not a file"),
    (["--models", "yolox-nano", "--camera", f"bdd={BDD_CAMERA}"],
     "planning needs a segmentation model"),
    (["--max-pixels-in-flight", "1000"], "must be at least --max-pixels"),
    (["--header-timeout-s", "0"], "--header-timeout-s must be > 0"),
    (["--grpc-max-streams", "0"], "--grpc-max-streams must be at least 1"),
    (["--max-connections", "-1"], "--max-connections must be at least 1"),
    (["--foxglove-port", "70000"], "--foxglove-port must be 0-65535"),
])
def test_bad_options_exit_2_with_one_line(extra: list[str], words: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "1", *extra]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_a_busy_foxglove_port_is_one_line_before_serving(
        capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", "1", "--foxglove-port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot serve Foxglove on 127.0.0.1:{port}" in err and err.count("\n") == 1


def test_empty_key_file_and_bad_camera_file(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("# no keys yet\n\n")
    assert main(["serve", "--api-key-file", str(keys)]) == 2
    assert "holds no API key" in capsys.readouterr().err
    camera = tmp_path / "camera.yaml"
    camera.write_text("width: [not, a, number\n")
    assert main(["serve", "--camera", f"front={camera}"]) == 2
    assert "camera" in capsys.readouterr().err
