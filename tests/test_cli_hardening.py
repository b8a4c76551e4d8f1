"""Hostile inputs to `perception run`, `replay` and `record` (issue 13): image bombs in every
reader and chunk bombs in MCAP, exit 2 where the user can fix the input, Ctrl-C and SIGTERM
that keep the same frames in every output, partial files of killed runs, videos cut short.

Every bomb runs the real CLI in a subprocess under a 3 GB address-space cap (RLIMIT_AS), so a
regression fails here instead of taking the machine down; its peak RSS must stay under 1.5 GB.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import zstandard
from mcap.reader import make_reader
from mcap.records import Chunk
from mcap.stream_reader import StreamReader

from perception.cli import main as cli
from perception.logs.files import HOST

REPO = Path(__file__).resolve().parents[1]
ADDRESS_SPACE_CAP = 3 * 2**30
PEAK_RSS_LIMIT_MB = 1536
CAMERA = REPO / "perception" / "cameras" / "udacity_960x540.yaml"


@dataclass
class Finished:
    code: int
    stdout: str
    stderr: str
    peak_rss_mb: float


def perception(*argv: object, timeout: float = 120) -> Finished:
    """`python -m perception ARGV` under the address-space cap: exit code, output, peak RSS."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_CAP, ADDRESS_SPACE_CAP))

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([sys.executable, "-m", "perception", *map(str, argv)],
                                   cwd=REPO, env=env, stdout=out, stderr=err, preexec_fn=cap)
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)  # wait4: this child's own peak RSS
        finally:
            timer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Finished(process.returncode, out.read(), err.read(), usage.ru_maxrss / 1024)


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A 100x100 PNG whose IHDR (CRC fixed) declares width x height: 2.7 GB if decoded."""
    data = bytearray(cv2.imencode(".png", np.zeros((100, 100, 3), np.uint8))[1].tobytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def still(drives: Path) -> Path:
    return drives / "udacity_lanelines_p1" / "solidWhiteRight.jpg"


def jpeg_of(path: Path) -> bytes:
    return path.read_bytes()


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------- bombs in every reader

def foxglove_images(path: Path, images: list[bytes], compression: str = "zstd") -> None:
    """An MCAP of foxglove.CompressedImage on /camera/image, 100 ms apart."""
    from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
    from mcap.writer import CompressionType
    from mcap_protobuf.writer import Writer

    with open(path, "wb") as file:
        writer = Writer(file, compression=CompressionType[compression.upper()])
        for i, data in enumerate(images):
            writer.write_message("/camera/image", CompressedImage(data=data, format="png"),
                                 log_time=i * 100_000_000, publish_time=i * 100_000_000)
        writer.finish()


def with_chunk_bomb(good: Path, out: Path, declared: int, content: int) -> None:
    """`good`'s chunks (an MCAP cut before its summary, as a recording cut short), then a zstd
    chunk that declares `declared` bytes and inflates to `content` bytes of zeros."""
    with open(good, "rb") as file:
        reader = StreamReader(file, emit_chunks=True)
        end = None
        for record in reader.records:
            if type(record).__name__ in ("MessageIndex", "Chunk"):
                end = file.tell()
    compressor = zstandard.ZstdCompressor(write_content_size=True).compressobj(size=content)
    zeros, data = bytes(1 << 24), b""
    for _ in range(content >> 24):
        data += compressor.compress(zeros)
    data += compressor.flush()
    from mcap.data_stream import RecordBuilder

    builder = RecordBuilder()
    Chunk(compression="zstd", data=data, message_start_time=0, message_end_time=0,
          uncompressed_crc=0, uncompressed_size=declared).write(builder)
    out.write_bytes(good.read_bytes()[:end] + builder.end())


def rosbag2_images(path: Path, images: list[bytes]) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    Compressed = store.types["sensor_msgs/msg/CompressedImage"]
    with Writer(path, version=8, storage_plugin=StoragePlugin.SQLITE3) as writer:
        connection = writer.add_connection("/cam/image/compressed", Compressed.__msgtype__,
                                           typestore=store)
        for i, data in enumerate(images):
            t = 1_700_000_000_000_000_000 + i * 100_000_000
            header = Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id="cam")
            message = Compressed(header=header, format="png",
                                 data=np.frombuffer(data, np.uint8))
            writer.write(connection, t, store.serialize_cdr(message, Compressed.__msgtype__))


def video_bomb(path: Path) -> None:
    """An MJPG AVI of 64x48 frames whose headers and JPEGs declare 16000x16000 (FFmpeg's own
    limit lets that through: 768 MB a frame)."""
    small = path.with_name("small.avi")
    writer = cv2.VideoWriter(str(small), cv2.VideoWriter.fourcc(*"MJPG"), 10, (64, 48))
    for value in range(5):
        writer.write(np.full((48, 64, 3), value * 40, np.uint8))
    writer.release()
    data = small.read_bytes().replace(struct.pack(">HH", 48, 64), struct.pack(">HH", 16000, 16000))
    path.write_bytes(data.replace(struct.pack("<ii", 64, 48), struct.pack("<ii", 16000, 16000)))


def bomb_case(case: str, folder: Path, drives: Path) -> tuple[list[object], int, str, int]:
    """(argv, exit code, text in stderr, JSONL lines written) for one hostile input."""
    good = still(drives).read_bytes()
    good_png = cv2.imencode(".png", cv2.imread(str(still(drives))))[1].tobytes()
    out = folder / "out.jsonl"
    if case == "run: image":
        (folder / "bomb.png").write_bytes(png_bomb())
        return (["run", folder / "bomb.png", "--json", out], 2,
                "bomb.png is 30000x30000 pixels; the limit is 33177600 pixels", 0)
    if case == "run: folder":
        images = folder / "images"
        images.mkdir()
        (images / "a.jpg").write_bytes(good)
        (images / "b.png").write_bytes(png_bomb())
        (images / "c.jpg").write_bytes(good)
        return (["run", images, "--json", out], 0, "warning: skipped ", 2)
    if case == "run: video":
        video_bomb(folder / "bomb.avi")
        return (["run", folder / "bomb.avi", "--json", out], 2,
                "the video's frame is 16000x16000 pixels", 0)
    if case == "record: video":
        video_bomb(folder / "bomb.avi")
        return (["record", "--video", folder / "bomb.avi", "--out", folder / "out.mcap"], 2,
                "the video's frame is 16000x16000 pixels", 0)
    if case == "replay: mcap":
        foxglove_images(folder / "bomb.mcap", [good_png, png_bomb(), good_png])
        return (["replay", folder / "bomb.mcap", "--json", out, "--out", folder / "out.mcap"],
                0, "/camera/image message 1 at log time 0.100000 s (in the record at byte "
                   "offset ", 2)
    if case == "replay: rosbag2":
        rosbag2_images(folder / "bag", [good_png, png_bomb(), good_png])
        return (["replay", folder / "bag", "--json", out], 0,
                "/cam/image/compressed message 1 at log time 1700000000.100000 s", 2)
    if case == "replay: kitti":
        kitti = folder / "kitti"
        shutil.copytree(drives / "kitti_object", kitti)
        (kitti / "image_2" / "000001.png").write_bytes(png_bomb())
        return (["replay", kitti, "--json", out], 0, "image_2 frame 1 (000001.png)", 2)
    if case == "replay: mcap chunk declaring 4 GB":
        foxglove_images(folder / "good.mcap", [good_png, good_png])
        with_chunk_bomb(folder / "good.mcap", folder / "bomb.mcap", 4 << 30, 1 << 20)
        return (["replay", folder / "bomb.mcap", "--json", out], 3,
                "a chunk declares 4294967296 bytes uncompressed", 2)
    if case == "replay: mcap chunk inflating to 2 GB":
        foxglove_images(folder / "good.mcap", [good_png, good_png])
        with_chunk_bomb(folder / "good.mcap", folder / "bomb.mcap", 1000, 2 << 30)
        return (["replay", folder / "bomb.mcap", "--json", out], 3,
                "a chunk does not inflate to the 1000 bytes it declares", 2)
    raise AssertionError(case)


BOMBS = ["run: image", "run: folder", "run: video", "record: video", "replay: mcap",
         "replay: rosbag2", "replay: kitti", "replay: mcap chunk declaring 4 GB",
         "replay: mcap chunk inflating to 2 GB"]


@pytest.mark.parametrize("case", BOMBS)
def test_bombs_are_never_decoded(case: str, tmp_path: Path, drives: Path) -> None:
    argv, code, says, written = bomb_case(case, tmp_path, drives)
    done = perception(*argv)
    assert done.code == code, done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    assert done.peak_rss_mb < PEAK_RSS_LIMIT_MB
    out = tmp_path / "out.jsonl"
    assert (len(lines(out)) if out.exists() else 0) == written
    if code == 2:
        assert not out.exists() and not list(tmp_path.glob(".*partial*"))
    else:
        assert len([line for line in done.stderr.splitlines() if "warning" in line
                    or "error" in line]) == 1  # one line for the bad record


# ---------------------------------------------------------------- exit 2, one line

@pytest.fixture
def read_only_folder(tmp_path: Path) -> Path:
    """A folder that takes no new file: chmod 555, or, for root (whom file modes do not
    stop), /sys, a read-only mount."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys")):
        try:
            (candidate / ".probe").touch()
            (candidate / ".probe").unlink()
        except OSError:
            return candidate
    pytest.skip("no folder here refuses writing (root, and /sys is writable)")


def one_line_exit_2(argv: list[object], capsys: pytest.CaptureFixture) -> str:
    code = cli([str(arg) for arg in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("perception: error: "), err
    return err[0]


def test_max_pixels_option(drives: Path, video_path: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture) -> None:
    image = still(drives)  # 960x540
    assert "960x540 pixels; the limit is 500000" in one_line_exit_2(
        ["run", image, "--max-pixels", 500_000], capsys)
    assert cli(["run", str(image), "--max-pixels", "518400", "--no-progress"]) == 0
    capsys.readouterr()
    for argv in (["run", image], ["replay", image], ["record", "--video", video_path, "--out",
                                                     tmp_path / "r.mcap"]):
        assert "--max-pixels must be between 1 and" in one_line_exit_2(
            [*argv, "--max-pixels", 0], capsys)


def test_outputs_that_cannot_be_written(read_only_folder: Path, drives: Path, tmp_path: Path,
                                        video_path: Path, capsys: pytest.CaptureFixture,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    image = still(drives)
    for argv in (["run", image, "--json", read_only_folder / "r.jsonl"],
                 ["run", image, "--json", "/proc/r.jsonl"],
                 ["run", image, "--save-masks", read_only_folder / "masks"],
                 ["run", image, "--out", read_only_folder],
                 ["replay", drives / "kitti_object", "--out", read_only_folder / "r.mcap"],
                 ["replay", drives / "kitti_object", "--ray", "--out-dir", "/proc/fleet"],
                 ["record", "--video", video_path, "--out", read_only_folder / "r.mcap"],
                 ["record", "--video", video_path, "--out", "/proc/r.mcap"]):
        assert "cannot" in one_line_exit_2(argv, capsys)
    monkeypatch.setenv("PERCEPTION_CACHE_DIR", str(read_only_folder / "cache"))
    message = one_line_exit_2(["models", "pull", "fastestdet"], capsys)
    assert "the model cache cannot be written" in message


def test_export_into_a_read_only_folder(read_only_folder: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("torch")
    message = one_line_exit_2(["export", "--checkpoint", tmp_path / "any.pt", "--out",
                               read_only_folder / "model.onnx"], capsys)
    assert "cannot write files here" in message


def test_a_symlink_to_itself(tmp_path: Path, drives: Path, capsys: pytest.CaptureFixture
                             ) -> None:
    (tmp_path / "loop.jpg").symlink_to("loop.jpg")
    (tmp_path / "loop.mcap").symlink_to("loop.mcap")
    assert "no such file" in one_line_exit_2(["run", tmp_path / "loop.jpg"], capsys)
    assert "no such file" in one_line_exit_2(["replay", tmp_path / "loop.mcap"], capsys)
    (tmp_path / "loop.onnx").symlink_to("loop.onnx")
    spec = {"file": "loop.onnx", "task": "detection", "decoder": "fastestdet",
            "input": {"width": 352, "height": 352}}
    (tmp_path / "mine.yaml").write_text(json.dumps(spec))
    assert "does not exist" in one_line_exit_2(["run", still(drives), "--models",
                                                tmp_path / "mine.yaml"], capsys)


def onnx_with_metadata(value: str) -> bytes:
    """A protobuf ModelProto with a (stub) graph and one metadata_props entry, encoded by hand
    (onnx.proto: graph = 7, metadata_props = 14, key = 1, value = 2)."""
    def field(number: int, payload: bytes) -> bytes:
        length, size = b"", len(payload)
        while True:
            length += bytes([size & 0x7F | (0x80 if size > 0x7F else 0)])
            size >>= 7
            if not size:
                break
        return bytes([number << 3 | 2]) + length + payload

    entry = field(1, b"perception.spec") + field(2, value.encode())
    return field(7, b"\x0a\x00") + field(14, entry)


def test_model_specs_that_cannot_be_used(tmp_path: Path, drives: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    deep = tmp_path / "deep.onnx"
    deep.write_bytes(onnx_with_metadata("[" * 200_000 + "]" * 200_000))
    assert "nested too deeply" in one_line_exit_2(["models", "info", deep], capsys)
    shutil.copy(REPO / "perception" / "zoo" / "embedded" / "multitask_lite.onnx",
                tmp_path / "net.onnx")
    spec = {"file": "net.onnx", "task": "multitask", "decoder": "multitask",
            "input": {"width": 0, "height": -5}}
    (tmp_path / "zero.yaml").write_text(json.dumps(spec))
    message = one_line_exit_2(["run", still(drives), "--models", tmp_path / "zero.yaml"], capsys)
    assert "input size 0x-5: each side must be 1 to 8192 pixels" in message
    spec["input"] = {"width": 320, "height": 192, "colour": "rgb"}
    (tmp_path / "unknown.yaml").write_text(json.dumps(spec))
    assert "unknown key input.colour" in one_line_exit_2(["models", "info",
                                                         tmp_path / "unknown.yaml"], capsys)
    (tmp_path / "laughs.yaml").write_text(
        "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "file: net.onnx\n")
    assert "anchors and aliases are not allowed" in one_line_exit_2(
        ["models", "info", tmp_path / "laughs.yaml"], capsys)


def test_label_file_holding_an_object_array(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from models.data import DataError, read_distilled

    (tmp_path / "labels").mkdir()
    np.savez(tmp_path / "labels" / "a.npz", boxes=np.array([{"x": 1}], dtype=object),
             classes=np.zeros(1))
    (tmp_path / "index.json").write_text(json.dumps(
        {"frames": [{"image": "a.jpg", "labels": "labels/a.npz", "source": "s",
                     "split": "train"}]}))
    with pytest.raises(DataError, match="Object arrays cannot be loaded"):
        read_distilled(tmp_path)


# ---------------------------------------------------------------- interrupted runs

def test_ctrl_c_before_the_first_frame_keeps_what_was_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """No frame reached the video: the JSONL (empty) is kept, no video, no partial file."""
    import perception.commands.run

    def ctrl_c_at_once(spec: str, max_pixels: int):
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(perception.commands.run, "open_source", ctrl_c_at_once)
    code = cli(["run", "0", "--json", str(tmp_path / "r.jsonl"), "--out",
                str(tmp_path / "annotated.mp4"), "--no-progress"])
    assert code == 130
    assert "interrupted after 0 frames" in capsys.readouterr().err
    assert files_under(tmp_path) == ["r.jsonl"] and lines(tmp_path / "r.jsonl") == []


def frames_in_video(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    return count


def frames_in_mcap(path: Path) -> int:
    with open(path, "rb") as file:
        return sum(1 for _ in make_reader(file).iter_messages(topics=["/camera/image"]))


def stop_while_writing(argv: list[object], partial: str, folder: Path, signum: int,
                       after_s: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "perception", *map(str, argv)], cwd=REPO,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 60
    while not list(folder.glob(partial)) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(after_s)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(argv, process.returncode, "", stderr)


@pytest.mark.parametrize(("command", "signum", "after_s"),
                         [("run", signal.SIGINT, 0.0), ("run", signal.SIGTERM, 1.0),
                          ("replay", signal.SIGTERM, 0.0), ("replay", signal.SIGINT, 1.0)])
def test_interrupted_outputs_hold_the_same_frames(command: str, signum: int, after_s: float,
                                                  tmp_path: Path, video_path: Path) -> None:
    """SIGINT or SIGTERM at any moment: exit 130, every output finished and holding the same
    frames (the video was released only after its writer thread finished), no partial file."""
    jsonl, video, mcap = tmp_path / "r.jsonl", tmp_path / "r.mp4", tmp_path / "r.mcap"
    if command == "run":
        argv = ["run", video_path, "--json", jsonl, "--out", video, "--no-progress"]
    else:
        argv = ["replay", video_path, "--json", jsonl, "--video", video, "--out", mcap]
    done = stop_while_writing(argv, ".r.partial-*.jsonl", tmp_path, signum, after_s)
    assert done.returncode == 130, done.stderr
    assert "outputs kept" in done.stderr and "Traceback" not in done.stderr
    written = len(lines(jsonl))
    assert written < 221, "stopped before the end"
    if written:
        assert frames_in_video(video) == written
    else:
        assert not video.exists()
    if command == "replay":
        assert frames_in_mcap(mcap) == written
    assert not list(tmp_path.glob(".*partial*"))


def test_partial_files_of_dead_processes_are_removed(tmp_path: Path, drives: Path) -> None:
    """A run killed outright leaves `.NAME.partial-PID@HOST.EXT`; the next run into the folder
    removes those whose process is gone, and leaves running ones and other hosts' alone."""
    finished, running = subprocess.Popen(["true"]), subprocess.Popen(["sleep", "60"])
    finished.wait()
    dead, alive = finished.pid, running.pid
    stale = [tmp_path / f".r.partial-{dead}@{HOST}.jsonl",
             tmp_path / f".v.partial-{dead}@{HOST}.mp4"]
    kept = [tmp_path / f".r.partial-{alive}@{HOST}.jsonl",
            tmp_path / f".r.partial-{dead}@another-host.jsonl", tmp_path / "notes.partial"]
    for path in stale + kept:
        path.write_text("x")
    (tmp_path / f".masks.partial-{dead}@{HOST}").mkdir()
    assert cli(["run", str(still(drives)), "--json", str(tmp_path / "r.jsonl"),
                "--no-progress"]) == 0
    running.kill()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [p.name for p in kept] + ["r.jsonl"])


# ---------------------------------------------------------------- a video cut mid-stream

@pytest.fixture(scope="module")
def cut_video(video_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real video cut at 1/8 of its bytes: 26 of its 221 frames decode."""
    path = tmp_path_factory.mktemp("cut") / "cut.mp4"
    data = video_path.read_bytes()
    path.write_bytes(data[:len(data) // 8])
    return path


@pytest.mark.parametrize("command", ["run", "replay", "record"])
def test_video_cut_mid_stream_exits_3_with_the_frames_before(
        command: str, cut_video: Path, tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    if command == "record":
        out = tmp_path / "cut.mcap"
        assert cli(["record", "--video", str(cut_video), "--out", str(out)]) == 3
        assert frames_in_mcap(out) == 26
    else:
        out = tmp_path / "cut.jsonl"
        extra = ["--no-progress"] if command == "run" else []
        assert cli([command, str(cut_video), "--json", str(out), *extra]) == 3
        assert len(lines(out)) == 26
    err = capfd.readouterr().err
    assert "ends after 26 frames, but its container announces 221" in err
    assert "h264" not in err and "mov," not in err  # FFmpeg's own lines are silenced
