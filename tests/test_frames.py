"""Frame sources on real files, and a clear SourceError for each kind of bad input."""

from __future__ import annotations

import itertools
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from perception.frames import (
    CorruptRecordError,
    PixelLimitError,
    SourceError,
    count_frames,
    decode_image,
    image_size,
    open_source,
)


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
    with pytest.raises(SourceError, match="JPEG header is truncated"):
        list(open_source(str(path)))


def test_not_an_image() -> None:
    with pytest.raises(SourceError, match="is not a JPEG, PNG, BMP, WebP or TIFF image"):
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


# ---------------------------------------------------------------- the pixel limit, by header

def encoded(suffix: str, width: int = 53, height: int = 37, params: list[int] | None = None
            ) -> bytes:
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8)
    ok, data = cv2.imencode(suffix, image, params or [])
    assert ok
    return data.tobytes()


FORMATS = {"png": encoded(".png"), "jpeg": encoded(".jpg"), "bmp": encoded(".bmp"),
           "webp lossy": encoded(".webp", params=[cv2.IMWRITE_WEBP_QUALITY, 80]),
           "webp lossless": encoded(".webp", params=[cv2.IMWRITE_WEBP_QUALITY, 101]),
           "tiff": encoded(".tif")}


@pytest.mark.parametrize("kind", FORMATS)
def test_header_size_is_the_decoded_size(kind: str) -> None:
    data = FORMATS[kind]
    assert image_size(data) == (53, 37)
    assert decode_image(data).shape == (37, 53, 3)


def test_big_endian_tiff_and_extended_webp_headers() -> None:
    tiff = (b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 2)
            + struct.pack(">HHIHH", 256, 3, 1, 640, 0) + struct.pack(">HHII", 257, 4, 1, 480))
    assert image_size(tiff) == (640, 480)
    vp8x = b"RIFF\x00\x00\x00\x00WEBPVP8X" + bytes(8) + (639).to_bytes(3, "little") \
        + (479).to_bytes(3, "little")
    assert image_size(vp8x) == (640, 480)


def declaring(kind: str, width: int, height: int) -> bytes:
    """A real small image of `kind` whose header is edited to declare width x height."""
    data = bytearray(FORMATS[kind])
    if kind == "png":
        data[16:24] = struct.pack(">II", width, height)
    elif kind == "jpeg":
        sof = data.index(b"\xff\xc0")
        data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    elif kind == "bmp":
        data[18:26] = struct.pack("<ii", width, height)
    elif kind == "webp lossless":
        data[21:25] = struct.pack("<I", (width - 1) | (height - 1) << 14)
    elif kind == "tiff":
        directory = struct.unpack_from("<I", data, 4)[0]
        for entry in range(directory + 2, directory + 2 + 12 * data[directory], 12):
            tag = struct.unpack_from("<H", data, entry)[0]
            if tag in (256, 257):
                data[entry + 2:entry + 12] = struct.pack("<HII", 4, 1,
                                                          width if tag == 256 else height)
    return bytes(data)


@pytest.mark.parametrize("kind", ["png", "jpeg", "bmp", "webp lossless", "tiff"])
def test_a_declared_bomb_is_refused_before_decoding(kind: str) -> None:
    """30000 x 30000 would be 2.7 GB decoded (WebP's header holds at most 16384 a side)."""
    side = 16384 if kind.startswith("webp") else 30000
    bomb = declaring(kind, side, side)
    assert image_size(bomb) == (side, side)
    with pytest.raises(PixelLimitError, match=f"{side}x{side} pixels; the limit is 33177600"):
        decode_image(bomb, "bomb")


def test_max_pixels_and_an_empty_size() -> None:
    with pytest.raises(PixelLimitError, match="53x37 pixels; the limit is 1000"):
        decode_image(FORMATS["png"], "small", max_pixels=1000)
    with pytest.raises(PixelLimitError, match="header says 0x37 pixels"):
        decode_image(declaring("png", 0, 37))
    with pytest.raises(SourceError, match="header is truncated"):
        decode_image(FORMATS["tiff"][:6])


def test_folder_skips_an_image_above_the_limit(tmp_path: Path, capsys) -> None:
    (tmp_path / "a.png").write_bytes(FORMATS["png"])
    (tmp_path / "b.png").write_bytes(declaring("png", 30000, 30000))
    (tmp_path / "c.bmp").write_bytes(FORMATS["bmp"])
    frames = list(open_source(str(tmp_path)))
    assert [(f.name, f.index) for f in frames] == [("a", 0), ("c", 2)]
    warning = capsys.readouterr().err.strip()
    assert warning.startswith("perception: warning: skipped ") and "b.png is 30000x30000" in warning
    (tmp_path / "a.png").unlink()
    (tmp_path / "c.bmp").unlink()
    with pytest.raises(SourceError, match="every image of the folder is above the pixel limit"):
        list(open_source(str(tmp_path)))


def test_a_file_far_larger_than_any_image_within_the_limit_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(FORMATS["png"] + bytes(10_000))
    with pytest.raises(PixelLimitError, match="bytes, more than an image within the limit"):
        list(open_source(str(path), max_pixels=1000))


# ---------------------------------------------------------------- videos: size, cuts, noise

def test_video_frame_size_is_checked_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (64, 48))
    for value in range(3):
        writer.write(np.full((48, 64, 3), value * 40, np.uint8))
    writer.release()
    with pytest.raises(PixelLimitError, match="the video's frame is 64x48 pixels; the limit "
                                              "is 1000"):
        next(open_source(str(path), max_pixels=1000))
    assert len(list(open_source(str(path)))) == 3


def test_video_cut_mid_stream_is_a_corrupt_record(tmp_path: Path, video_path: Path,
                                                  capfd) -> None:
    """The real video cut at 1/8 of its bytes decodes 26 of its 221 frames; FFmpeg says
    nothing on stderr."""
    cut = tmp_path / "cut.mp4"
    data = video_path.read_bytes()
    cut.write_bytes(data[:len(data) // 8])
    frames = []
    with pytest.raises(CorruptRecordError, match="ends after 26 frames, but its container "
                                                 "announces 221"):
        frames.extend(open_source(str(cut)))
    assert len(frames) == 26
    head = tmp_path / "head.mp4"
    head.write_bytes(data[:1000])
    with pytest.raises(SourceError, match="cannot be read as a video"):
        list(open_source(str(head)))
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(("suffix", "fourcc"), [(".avi", "MJPG"), (".mp4", "mp4v"),
                                                (".mkv", "MJPG"), (".mov", "mp4v")])
def test_whole_videos_are_not_taken_for_cut_ones(tmp_path: Path, suffix: str,
                                                 fourcc: str) -> None:
    """Frame counts of containers OpenCV writes (an .mkv's is estimated from its duration)."""
    path = tmp_path / f"clip{suffix}"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), 29.97, (96, 64))
    for value in range(37):
        writer.write(np.full((64, 96, 3), value * 6, np.uint8))
    writer.release()
    assert len(list(open_source(str(path)))) == 37


def test_the_whole_real_video_is_read(video_path: Path) -> None:
    assert sum(1 for _ in open_source(str(video_path))) == 221
