"""Teacher pseudo-labels for unlabelled real frames, computed once and cached.

    python -m models.distill --drives ../shared/assets/drives --out data/distilled

The zoo teachers (yolox-nano for road users, twinlitenet for drivable area and lane lines) run
through the same `Perceiver` as `perception run`. Each frame's labels are cached in
`--cache` as `<sha256 of the file>-<frame>-<teachers>.npz`, so re-running (or adding frames)
only labels what is new, and a changed teacher file invalidates exactly its labels.

The output folder is self-contained and small enough to copy to a training machine: frames
re-encoded at most `--max-width` wide, one `.npz` of labels per frame, and `index.json` with
each frame's source and split. Frames are split BY SOURCE (a video, a drive sequence, a
dataset): validation sources are never trained on, so agreement figures measure
generalisation to unseen drives, not memory of neighbouring frames.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from models.data import DataError, detection_arrays, load_arrays
from perception.frames import Frame, open_source, read_image
from perception.logs.files import atomic_folder, atomic_output
from perception.pipeline import Perceiver
from perception.results import FrameResult
from perception.zoo.download import sha256_of
from perception.zoo.registry import resolve

TEACHERS = ("yolox-nano", "twinlitenet")

# (glob under the drives folder, source id; "{stem}" = one source per file, split)
SOURCES: list[tuple[str, str, str]] = [
    ("unlabeled/camvid_cambridge/0016E5_*.jpg", "camvid/0016E5", "train"),
    ("unlabeled/nuscenes_boston/*.jpg", "nuscenes/boston", "train"),
    ("unlabeled/tusimple_highway/*.jpg", "tusimple/highway", "train"),
    ("bdd100k_frames/twinlitenet/*.jpg", "bdd/{stem}", "train"),
    ("labeled/tusimple/sample_512x288/clips/0313-1/*/20.jpg", "tusimple/0313-1", "train"),
    ("labeled/tusimple/sample_512x288/clips/0313-2/*/20.jpg", "tusimple/0313-2", "train"),
    ("labeled/kitti_object_cropped/image_2/00000[3-9].png", "kitti/{stem}", "train"),
    ("labeled/kitti_object_cropped/image_2/00001[01].png", "kitti/{stem}", "train"),
    # Held out: whole drives/videos, and every frame with ground truth we evaluate on.
    ("unlabeled/camvid_cambridge/0006R0_*.jpg", "camvid/0006R0", "val"),
    ("labeled/camvid_road/images/*.png", "camvid/Seq05VD", "val"),
    ("udacity_lanelines_p1/*.jpg", "udacity/p1", "val"),
    ("udacity_lanelines_p1/*.mp4", "udacity/p1", "val"),
    ("bdd100k_frames/yolop/*.jpg", "bdd/{stem}", "val"),
    ("kitti_object/image_2/*.png", "kitti/{stem}", "val"),
    ("labeled/kitti_object_cropped/image_2/00001[2-9].png", "kitti/{stem}", "val"),
    ("labeled/kitti_object_cropped/image_2/000020.png", "kitti/{stem}", "val"),
    ("labeled/kitti_road/image_2/*.png", "kitti_road/{stem}", "val"),
    ("labeled/tusimple/lanenet_examples/image/*.png", "tusimple/lanenet_examples", "val"),
]


@dataclass(frozen=True)
class FrameRef:
    path: Path
    source: str
    split: str
    frame: int = 0  # index inside a video; 0 for a still

    @property
    def name(self) -> str:
        stem = f"{self.path.parent.name}_{self.path.stem}"
        return f"{stem}_{self.frame:05d}" if self.path.suffix == ".mp4" else stem


def video_length(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    try:
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()


def plan(drives: Path, video_step: int = 4) -> list[FrameRef]:
    """Every frame to distill with its source and split; no source lands in both splits."""
    frames: list[FrameRef] = []
    for pattern, source, split in SOURCES:
        for path in sorted(drives.glob(pattern)):
            name = source.format(stem=path.stem)
            if path.suffix == ".mp4":
                frames += [FrameRef(path, name, split, i)
                           for i in range(0, video_length(path), video_step)]
            else:
                frames.append(FrameRef(path, name, split))
    if not frames:
        raise DataError(f"{drives}: no frames found (expected the layout of the shared assets' "
                        "drives folder, see its MANIFEST.md)")
    splits: dict[str, set[str]] = {}
    for frame in frames:
        splits.setdefault(frame.source, set()).add(frame.split)
    leaking = [source for source, found in splits.items() if len(found) > 1]
    assert not leaking, f"sources in both splits: {leaking}"
    return frames


def teacher_key(specs: list) -> str:
    """A short hash of the teachers' pinned file checksums: their labels' version."""
    return hashlib.sha256("".join(spec.sha256 for spec in specs).encode()).hexdigest()[:12]


def read_frames(refs: list[FrameRef]) -> list[np.ndarray]:
    """The images of refs, decoding each video once."""
    images, videos = [], {}
    for ref in refs:
        if ref.path.suffix != ".mp4":
            images.append(read_image(ref.path))
            continue
        if ref.path not in videos:
            videos[ref.path] = {f.index: f.image for f in open_source(str(ref.path))}
        images.append(videos[ref.path][ref.frame])
    return images


LABEL_KEYS = ("boxes", "classes", "scores", "drivable", "lanes")  # of `pseudo_labels`


def pseudo_labels(result: FrameResult, width: int, height: int) -> dict[str, np.ndarray]:
    """A teacher `FrameResult` -> boxes normalised to [0, 1], our class ids, scores, masks."""
    boxes, classes, scores = detection_arrays(result.detections)
    return {"boxes": boxes / np.array([width, height, width, height], np.float32),
            "classes": classes.astype(np.int16), "scores": scores,
            "drivable": result.drivable.astype(np.uint8),
            "lanes": result.lanes.astype(np.uint8)}


def label_frames(refs: list[FrameRef], cache: Path, batch: int = 8) -> tuple[list[Path], str]:
    """The cached pseudo-label file of each frame (running the teachers where missing), and
    the teachers' key."""
    teachers = [resolve(name) for name in TEACHERS]
    key = teacher_key([spec for spec, _ in teachers])
    cache.mkdir(parents=True, exist_ok=True)
    hashes = {path: sha256_of(path) for path in {ref.path for ref in refs}}
    targets = [cache / f"{hashes[ref.path]}-{ref.frame}-{key}.npz" for ref in refs]
    todo = [i for i, target in enumerate(targets) if not target.is_file()]
    if todo:
        perceiver = Perceiver(teachers)
        try:
            for start in tqdm(range(0, len(todo), batch), desc="teachers", unit="batch"):
                chunk = todo[start:start + batch]
                images = read_frames([refs[i] for i in chunk])
                frames = [Frame(image, 0.0, refs[i].frame, str(refs[i].path))
                          for i, image in zip(chunk, images, strict=True)]
                for i, frame, result in zip(chunk, frames, perceiver.perceive(frames),
                                            strict=True):
                    labels = pseudo_labels(result, frame.width, frame.height)
                    with atomic_output(targets[i]) as temp:
                        np.savez_compressed(temp, **labels)
        finally:
            perceiver.close()
    return targets, key


def write_folder(refs: list[FrameRef], label_files: list[Path], out: Path, key: str,
                 max_width: int) -> None:
    """Frames (re-encoded, at most max_width wide) + labels + index.json into `out`, an empty
    folder (the temporary one of `atomic_folder`, so its files need no atomic writes)."""
    (out / "images").mkdir()
    (out / "labels").mkdir()
    entries = []
    for ref, label_path, image in zip(refs, label_files, _iter_images(refs), strict=True):
        height, width = image.shape[:2]
        if width > max_width:
            height, width = round(height * max_width / width), max_width
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        image_name = f"images/{ref.name}.jpg"
        cv2.imwrite(str(out / image_name), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        labels = dict(zip(LABEL_KEYS, load_arrays(label_path, *LABEL_KEYS), strict=True))
        labels["boxes"] = labels["boxes"] * np.array([width, height, width, height], np.float32)
        np.savez_compressed(out / f"labels/{ref.name}.npz", **labels)
        entries.append({"image": image_name, "labels": f"labels/{ref.name}.npz",
                        "source": ref.source, "split": ref.split,
                        "origin": str(ref.path), "frame": ref.frame})
    index = {"teachers": list(TEACHERS), "teacher_key": key, "frames": entries}
    (out / "index.json").write_text(json.dumps(index, indent=1))


def _iter_images(refs: list[FrameRef]) -> Iterator[np.ndarray]:
    for start in range(0, len(refs), 32):
        yield from read_frames(refs[start:start + 32])


def distill(drives: Path, out: Path, cache: Path, video_step: int = 4, max_width: int = 640,
            force: bool = False) -> list[FrameRef]:
    if out.exists() and not force:
        raise DataError(f"{out}: already exists; pass --force to replace it")
    refs = plan(drives, video_step)
    label_files, key = label_frames(refs, cache)
    with atomic_folder(out) as temp:
        write_folder(refs, label_files, temp, key, max_width)
    return refs


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "perception" / "pseudo-labels"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--drives", type=Path, required=True,
                        help="the shared assets' drives folder")
    parser.add_argument("--out", type=Path, required=True, help="distilled folder to write")
    parser.add_argument("--cache", type=Path, default=default_cache(),
                        help="pseudo-label cache (default: %(default)s)")
    parser.add_argument("--video-step", type=int, default=4, help="take every Nth video frame")
    parser.add_argument("--max-width", type=int, default=640)
    parser.add_argument("--force", action="store_true", help="replace an existing --out")


def main(args: argparse.Namespace) -> int:
    if args.video_step < 1 or args.max_width < 32:
        raise DataError("--video-step must be at least 1 and --max-width at least 32")
    refs = distill(args.drives, args.out, args.cache, args.video_step, args.max_width, args.force)
    counts: dict[str, int] = {}
    for ref in refs:
        counts[ref.split] = counts.get(ref.split, 0) + 1
    print(f"{args.out}: {len(refs)} frames ({', '.join(f'{k} {v}' for k, v in counts.items())})")
    return 0


if __name__ == "__main__":
    import sys

    from models.command import standalone

    sys.exit(standalone("distill", add_arguments, main, __doc__))
