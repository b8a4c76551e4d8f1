"""Frame sources on real files, and a clear SourceError for each kind of bad input."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from perception.frames import SourceError, count_frames, decode_image, open_source


def test_image_file(drives: Path) -> None:
    path = drives / "kitti_object" / "image_2" / "000001.png"
    frames = list(open_source(str(path)))
    assert len(frames) == 1
    frame = frames[0]
    assert frame.image.dtype == np.uint8 and frame.image.shape == (375, 1242, 3)
    assert (frame.index, frame.name, frame.source) == (0, "000001", str(path))
    assert np.array_equal(frame.image, cv2.imread(str(path)))  # BGR, as OpenCV reads it
    assert count_frames(str(path)) == 1


def test_folder_is_sorted(drives: Path) -> None:
    folder = drives / "udacity_lanelines_p1"
    frames = list(open_source(str(folder)))
    names = sorted(p.stem for p in folder.glob("*.jpg"))
    assert [f.name for f in frames] == names
    assert [f.index for f in frames] == list(range(len(names)))
    assert count_frames(str(folder)) == len(names)


def test_video_frames(video_path: Path) -> None:
    frames = list(itertools.islice(open_source(str(video_path)), 3))
    assert [f.name for f in frames] == ["000000", "000001", "000002"]
    assert frames[0].image.shape == (540, 960, 3)
    assert frames[1].timestamp > frames[0].timestamp
    assert frames[0].meta["fps"] == pytest.approx(25.0)
    assert count_frames(str(video_path)) == 221


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "nope.jpg"))


def test_zero_byte_image(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.touch()
    with pytest.raises(SourceError, match="empty"):
        list(open_source(str(path)))


def test_truncated_image(tmp_path: Path, drives: Path) -> None:
    data = (drives / "udacity_lanelines_p1" / "solidWhiteRight.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[:200])
    with pytest.raises(SourceError, match="could not be decoded"):
        list(open_source(str(path)))


def test_not_an_image() -> None:
    with pytest.raises(SourceError, match="could not be decoded"):
        decode_image(b"this is text, not a JPEG", "upload")


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no images"):
        list(open_source(str(tmp_path)))


def test_video_without_frames(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"  # a real container header, zero frames
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10, (64, 48))
    writer.release()
    with pytest.raises(SourceError, match="no frames"):
        list(open_source(str(path)))


def test_truncated_video(tmp_path: Path, video_path: Path) -> None:
    path = tmp_path / "cut.mp4"
    path.write_bytes(video_path.read_bytes()[:1000])
    with pytest.raises(SourceError):
        list(open_source(str(path)))


def test_zero_byte_video(tmp_path: Path) -> None:
    path = tmp_path / "zero.mp4"
    path.touch()
    with pytest.raises(SourceError):
        list(open_source(str(path)))


def test_unknown_kind(tmp_path: Path, drives: Path) -> None:
    path = tmp_path / "notes.txt"
    shutil.copy(drives / "kitti_object" / "label_2" / "000001.txt", path)
    with pytest.raises(SourceError, match="unknown kind"):
        open_source(str(path))
