"""Writing output files safely: every file appears under its final name only when complete.

The one way the project writes a file (results, masks, videos, MCAP, camera files, checkpoints,
ONNX exports, distilled data; only a model download keeps a stable name, to resume it): into a
temporary name beside it, renamed into place when the writing block succeeds, so an
interrupted run never leaves a half-written file. Also the annotated-video writer and the JSON
Lines form of a result.

A temporary name is `.NAME.partial-PID@HOST.EXT`. A process killed outright (SIGKILL, power
loss) leaves it behind: the next command that writes into the same folder removes those of
processes of this host that are gone (`remove_stale_partials`); another host's (a shared
folder of a Ray fleet) are left alone. Every way a folder cannot be written (read-only, no
space, /proc) is an `OutputError`, found before any work where possible (`writable`,
`make_folder` try a file there).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import cv2
import numpy as np

from perception.errors import PerceptionError
from perception.results import FrameResult


class OutputError(PerceptionError):
    """An output path cannot be written."""


HOST = socket.gethostname()
_PARTIAL = re.compile(rf"^\..+\.partial-(\d+)@{re.escape(HOST)}(\.[^.]*)?$")


def partial_name(path: Path) -> Path:
    """The temporary name of `path` while this process writes it. It keeps the suffix (OpenCV
    picks a video container by it, NumPy and PyTorch leave such names alone) and the folder,
    so `os.replace` is atomic."""
    return path.with_name(f".{path.stem}.partial-{os.getpid()}@{HOST}{path.suffix}")


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it onto `path` only if the block succeeds.
    A block that created nothing there (a video that got no frame) leaves no file."""
    path = Path(path)
    temp = partial_name(path)
    try:
        yield temp
        if temp.exists():
            try:
                os.replace(temp, path)
            except OSError as error:
                raise OutputError(f"{path}: cannot be written ({error.strerror})") from None
    finally:
        temp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """Yield a new empty folder beside `out`; it replaces `out` (and all it held) only if the
    block succeeds, and is removed otherwise: the folder form of `atomic_output`."""
    temp = out.with_name(f".{out.name}.partial-{os.getpid()}@{HOST}")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    try:
        yield temp
        if out.exists():
            shutil.rmtree(out)
        os.replace(temp, out)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def write_atomically(path: str | Path, data: bytes | str) -> None:
    with atomic_output(path) as temp:
        if isinstance(data, str):
            temp.write_text(data, encoding="utf-8")
        else:
            temp.write_bytes(data)


def writable(path: Path) -> Path:
    """`path` if a file can be written there: its folder exists and takes a new file, and it
    is not a folder. Stale temporary files of dead processes in that folder are removed."""
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, expected a file name")
    if not path.parent.is_dir():
        raise OutputError(f"{path.parent}: no such folder (for {path.name})")
    _try_writing(path.parent)
    return path


def make_folder(path: Path) -> Path:
    """Create `path` (and its parents) if needed and check that it takes a new file."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{path}: cannot create folder ({error.strerror})") from None
    _try_writing(path)
    return path


def _try_writing(folder: Path) -> None:
    """Create and delete a file in `folder`: only writing tells a read-only mount, a full disk
    or /proc (file permissions alone do not, for root)."""
    remove_stale_partials(folder)
    probe = partial_name(folder / "write-check")
    try:
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise OutputError(f"{folder}: cannot write files here ({error.strerror})") from None


def remove_stale_partials(folder: Path) -> list[Path]:
    """Remove the temporary files and folders that processes of this host which no longer run
    left in `folder` (see `partial_name`); those removed."""
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _PARTIAL.match(entry.name)
        if match is None or _running(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with suppress(OSError):  # another user's file in a shared folder
                entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process; a PID out of range
        return True
    return True


def write_image(path: Path, image: np.ndarray) -> None:
    """An image file, encoded by its suffix (.png, .jpg)."""
    ok, data = cv2.imencode(path.suffix, image)
    if not ok:
        raise OutputError(f"{path}: cannot encode as {path.suffix}")
    write_atomically(path, data.tobytes())


def jsonl_line(result: FrameResult) -> str:
    """One result as a compact JSON Lines line (newline included), as `--json` files hold."""
    return json.dumps(result.model_dump(mode="json"), separators=(",", ":")) + "\n"


class VideoOutput:
    """An mp4v video (the OpenCV wheels carry no H.264 encoder) of rendered frames. It opens at
    the second frame, whose distance from the first gives the frame rate; every frame is resized
    to the first frame's size."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer: cv2.VideoWriter | None = None
        self.size = (0, 0)
        self.first: tuple[float, np.ndarray] | None = None  # (timestamp, image) until opened

    def write(self, timestamp: float, image: np.ndarray) -> None:
        if self.writer is None and self.first is None:
            self.first = (timestamp, image)
            return
        if self.writer is None:
            self._open(timestamp - self.first[0])
        self._put(image)

    def finish(self) -> None:
        """Write a lone first frame, then close the file."""
        if self.writer is None and self.first is not None:
            self._open(0.0)
        self.release()

    def release(self) -> None:
        if self.writer is not None:
            self.writer.release()

    def _open(self, gap_s: float) -> None:
        fps = min(120.0, max(1.0, 1.0 / gap_s)) if gap_s > 0 else 10.0
        first_image = self.first[1]
        self.size = (first_image.shape[1], first_image.shape[0])
        self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*"mp4v"), fps,
                                      self.size)
        if not self.writer.isOpened():
            raise OutputError(f"{self.path}: OpenCV cannot write an mp4v video here")
        self._put(first_image)
        self.first = None

    def _put(self, image: np.ndarray) -> None:
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size)
        self.writer.write(image)
