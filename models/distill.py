"""Teacher pseudo-labels for unlabelled real frames, computed once and cached.

    python -m models.distill --drives ../shared/assets/drives --out data/distilled

Pseudo-labels better than any one teacher pass: two detectors (the zoo's yolox-nano through
the same `Perceiver` as `perception run`, and PicoDet-S, `models/picodet.py`), each on the frame
and on its mirror image, fused by weighted box fusion (`ensemble_boxes`); twinlitenet's drivable
area and lane lines on the frame and its mirror (drivable where both passes agree, lanes where
either sees one). Boxes and drivable pixels on our own car are dropped (`HOOD_CAMERAS`: the
camera file's hood for frames of that camera). Ground truth replaces the pseudo-label of its
task wherever it exists (`ground_truth`: KITTI boxes, CamVid road, BDD100K drivable maps,
comma10k road and lanes, TuSimple lanes). Each frame's teacher labels are cached in `--cache`
as `<sha256 of the file>-<frame>-<teachers>.npz`, so re-running (or adding frames) only labels
what is new, and a changed teacher file or fusion recipe invalidates exactly its labels.

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
from ensemble_boxes import weighted_boxes_fusion
from tqdm import tqdm

from models import data as readers
from models.data import DataError, Record, comma10k_route, detection_arrays, load_arrays
from models.picodet import PicoDet
from models.picodet import default_path as picodet_path
from perception.driving.camera import CameraError, fit_to_frame, load_camera
from perception.driving.hood import HOOD_BOX_FRACTION, hood_box_fraction, hood_mask
from perception.frames import Frame, open_source, read_image
from perception.logs.files import atomic_folder, atomic_output
from perception.pipeline import Perceiver
from perception.results import FrameResult
from perception.zoo.download import sha256_of
from perception.zoo.registry import resolve

TEACHERS = ("yolox-nano", "twinlitenet")  # through the runtime; PicoDet-S beside them
FUSION = "wbf-flip-v1"  # the recipe below; part of the cache key
FUSION_IOU = 0.55  # boxes of the passes that overlap this much are one object
FUSED_SCORE = 0.2  # kept after fusion (the mean over the 4 passes: absent passes count 0)
CAMERAS = Path(__file__).resolve().parents[1] / "perception" / "cameras"
HOOD_CAMERAS = {"bdd/": CAMERAS / "bdd100k_1280x720.yaml"}  # source prefix -> its hood

# (glob under the drives folder, source id, split). "{stem}": one source per file; "{route}":
# a comma10k frame's drive. The ids are the labelled readers' own (models/data.py), so that
# `perception train` drops a held-out frame whichever folder it comes through.
SOURCES: list[tuple[str, str, str]] = [
    ("unlabeled/camvid_cambridge/0016E5_*.jpg", "camvid/0016E5", "train"),
    ("unlabeled/nuscenes_boston/*.jpg", "nuscenes/boston", "train"),
    ("unlabeled/tusimple_highway/*.jpg", "tusimple/highway", "train"),
    ("bdd100k_frames/twinlitenet/*.jpg", "bdd/{stem}", "train"),
    ("labeled/tusimple/sample_512x288/clips/0313-1/*/20.jpg", "tusimple/0313-1", "train"),
    ("labeled/tusimple/sample_512x288/clips/0313-2/*/20.jpg", "tusimple/0313-2", "train"),
    ("labeled/kitti_object_cropped/image_2/00000[3-9].png", "kitti/{stem}", "train"),
    ("labeled/kitti_object_cropped/image_2/00001[01].png", "kitti/{stem}", "train"),
    ("unlabeled/bdd100k_more/*/*.jpg", "bdd/more_{stem}", "train"),
    ("unlabeled/kitti_raw_2011_09_26/*.jpg", "kitti_raw/2011_09_26", "train"),
    ("labeled/comma10k/imgs/000[0-2456]_*.png", "comma10k/{route}", "train"),
    # Held out: whole drives/videos, and every frame with ground truth we evaluate on.
    ("unlabeled/camvid_cambridge/0006R0_*.jpg", "camvid/0006R0", "val"),
    ("labeled/camvid_road/images/*.png", "camvid/Seq05VD", "val"),
    ("labeled/camvid_seq05vd_more/images/*.jpg", "camvid/Seq05VD", "val"),
    ("labeled/bdd100k_val_drivable/images/*.jpg", "bdd/{stem}", "val"),
    ("labeled/comma10k/imgs/000[3789]_*.png", "comma10k/{route}", "val"),
    ("labeled/comma10k/imgs/0010_*.png", "comma10k/{route}", "val"),
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
            name = source.format(stem=path.stem, route=comma10k_route(path))
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


def teacher_key(versions: list[str]) -> str:
    """A short hash of the teachers' pinned file checksums and the fusion recipe: their
    labels' version."""
    return hashlib.sha256("".join(versions).encode()).hexdigest()[:12]


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
Passes = list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # (boxes, scores, classes) per pass


def mirrored(boxes: np.ndarray, width: int) -> np.ndarray:
    """Boxes of a horizontally flipped frame, back in the frame's coordinates."""
    return np.stack((width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]), 1)


def fuse_boxes(passes: Passes, width: int, height: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted box fusion of detector passes (frame pixels) -> boxes, scores, classes."""
    scale = np.array([width, height, width, height], np.float32)
    boxes, scores, classes = weighted_boxes_fusion(
        [np.clip(b / scale, 0, 1).tolist() for b, _, _ in passes],
        [s.tolist() for _, s, _ in passes], [c.tolist() for _, _, c in passes],
        iou_thr=FUSION_IOU, skip_box_thr=0.0, conf_type="avg")
    keep = scores >= FUSED_SCORE
    return ((boxes[keep] * scale).astype(np.float32).reshape(-1, 4),
            scores[keep].astype(np.float32), classes[keep].astype(np.int64))


def frame_hood(source: str, width: int, height: int) -> np.ndarray | None:
    """The hood of a frame from its camera's file, where the source has one."""
    for prefix, camera in HOOD_CAMERAS.items():
        if source.startswith(prefix):
            try:
                return hood_mask(fit_to_frame(load_camera(camera), width, height))
            except CameraError:  # a frame of another shape: no hood known
                return None
    return None


def pseudo_labels(results: tuple[FrameResult, FrameResult], pico: Passes, width: int,
                  height: int, hood: np.ndarray | None) -> dict[str, np.ndarray]:
    """The teachers' passes on a frame and its mirror -> fused boxes normalised to [0, 1],
    our class ids, scores and masks at the segmenter's resolution, with the hood dropped."""
    plain, flipped = results
    passes: Passes = []
    for result, flip in ((plain, False), (flipped, True)):
        boxes, classes, scores = detection_arrays(result.detections)
        passes.append((mirrored(boxes, width) if flip else boxes, scores, classes))
    passes += pico
    boxes, scores, classes = fuse_boxes(passes, width, height)
    drivable = plain.drivable.astype(np.uint8) & flipped.drivable[:, ::-1].astype(np.uint8)
    lanes = plain.lanes.astype(np.uint8) | flipped.lanes[:, ::-1].astype(np.uint8)
    if hood is not None:
        integral = cv2.integral(hood)
        kept = [hood_box_fraction(tuple(box), integral) < HOOD_BOX_FRACTION for box in boxes]
        boxes, scores, classes = boxes[kept], scores[kept], classes[kept]
        small = cv2.resize(hood.astype(np.float32), drivable.shape[::-1],
                           interpolation=cv2.INTER_AREA) > 0
        drivable[small] = 0
        lanes[small] = 0
    return {"boxes": boxes.reshape(-1, 4) / np.array([width, height, width, height], np.float32),
            "classes": classes.astype(np.int16), "scores": scores,
            "drivable": np.ascontiguousarray(drivable), "lanes": np.ascontiguousarray(lanes)}


def label_frames(refs: list[FrameRef], cache: Path, batch: int = 8, picodet: Path | None = None
                 ) -> tuple[list[Path], str]:
    """The cached pseudo-label file of each frame (running the teachers where missing), and
    the teachers' key."""
    teachers = [resolve(name) for name in TEACHERS]
    picodet = picodet or picodet_path()
    key = teacher_key([spec.sha256 for spec, _ in teachers] + [FUSION, sha256_of(picodet)])
    cache.mkdir(parents=True, exist_ok=True)
    hashes = {path: sha256_of(path) for path in {ref.path for ref in refs}}
    targets = [cache / f"{hashes[ref.path]}-{ref.frame}-{key}.npz" for ref in refs]
    todo = [i for i, target in enumerate(targets) if not target.is_file()]
    if todo:
        perceiver, detector = Perceiver(teachers), PicoDet(picodet)
        try:
            for start in tqdm(range(0, len(todo), batch), desc="teachers", unit="batch"):
                chunk = todo[start:start + batch]
                images = read_frames([refs[i] for i in chunk])
                frames = [Frame(image, 0.0, refs[i].frame, str(refs[i].path))
                          for i, image in zip(chunk, images, strict=True)]
                flips = [Frame(np.ascontiguousarray(f.image[:, ::-1]), 0.0, f.index, f.source)
                         for f in frames]
                results = perceiver.perceive(frames + flips)
                for k, (i, frame) in enumerate(zip(chunk, frames, strict=True)):
                    width, height = frame.width, frame.height
                    pico_flip = detector(flips[k].image)
                    pico = [detector(frame.image),
                            (mirrored(pico_flip[0], width), *pico_flip[1:])]
                    labels = pseudo_labels((results[k], results[len(frames) + k]), pico,
                                           width, height,
                                           frame_hood(refs[i].source, width, height))
                    with atomic_output(targets[i]) as temp:
                        np.savez_compressed(temp, **labels)
        finally:
            perceiver.close()
    return targets, key


GROUND_TRUTH = ("kitti_object", "labeled/kitti_object_cropped", "labeled/camvid_road",
                "labeled/camvid_seq05vd_more", "labeled/kitti_road", "labeled/comma10k",
                "labeled/bdd100k_val_drivable", "labeled/tusimple/sample_512x288",
                "labeled/tusimple/lanenet_examples")  # folders of `readers.read_labelled`


def ground_truth(drives: Path) -> dict[Path, Record]:
    """The shared assets' labelled frames (those present) by resolved image path."""
    records = [r for folder in GROUND_TRUTH if (drives / folder).is_dir()
               for r in readers.read_labelled(drives / folder)]
    if (drives / "labeled" / "bdd100k_drivable").is_dir():
        records += readers.read_bdd(drives / "bdd100k_frames" / "yolop",
                                    drivable=drives / "labeled" / "bdd100k_drivable")
    return {record.image.resolve(): record for record in records}


def with_ground_truth(labels: dict[str, np.ndarray], record: Record | None, width: int,
                      height: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """Labels (boxes in frame px of `width` x `height`) with each task that has ground truth
    replaced by it, and the names of those tasks."""
    if record is None:
        return labels, []
    sample = readers.load(record)
    scale = width / sample.image.shape[1]
    replaced = []
    if sample.hood is not None and len(labels["boxes"]):  # our own car: never a road user
        integral = cv2.integral(cv2.resize(sample.hood, (width, height),
                                           interpolation=cv2.INTER_NEAREST))
        kept = [hood_box_fraction(tuple(b), integral) < HOOD_BOX_FRACTION
                for b in labels["boxes"]]
        labels |= {key: labels[key][kept] for key in ("boxes", "classes", "scores")}
    if sample.boxes is not None:
        labels["boxes"] = (sample.boxes * np.float32(scale)).astype(np.float32)
        labels["classes"] = sample.classes.astype(np.int16)
        labels["scores"] = np.ones(len(sample.boxes), np.float32)
        replaced.append("boxes")
    for name in ("drivable", "lanes"):
        truth = getattr(sample, name)
        if truth is not None:
            labels[name] = cv2.resize(truth, labels[name].shape[::-1],
                                      interpolation=cv2.INTER_NEAREST)
            replaced.append(name)
    return labels, replaced


def write_folder(refs: list[FrameRef], label_files: list[Path], out: Path, key: str,
                 max_width: int, truths: dict[Path, Record]) -> None:
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
        labels, replaced = with_ground_truth(labels, truths.get(ref.path.resolve()), width,
                                             height)
        np.savez_compressed(out / f"labels/{ref.name}.npz", **labels)
        entries.append({"image": image_name, "labels": f"labels/{ref.name}.npz",
                        "source": ref.source, "split": ref.split,
                        "origin": str(ref.path), "frame": ref.frame,
                        "ground_truth": replaced})
    index = {"teachers": [*TEACHERS, "picodet-s"], "fusion": FUSION, "teacher_key": key,
             "frames": entries}
    (out / "index.json").write_text(json.dumps(index, indent=1))


def _iter_images(refs: list[FrameRef]) -> Iterator[np.ndarray]:
    for start in range(0, len(refs), 32):
        yield from read_frames(refs[start:start + 32])


def distill(drives: Path, out: Path, cache: Path, video_step: int = 4, max_width: int = 640,
            force: bool = False) -> list[FrameRef]:
    if out.exists() and not force:
        raise DataError(f"{out}: already exists; pass --force to replace it")
    refs = plan(drives, video_step)
    truths = ground_truth(drives)
    label_files, key = label_frames(refs, cache)
    with atomic_folder(out) as temp:
        write_folder(refs, label_files, temp, key, max_width, truths)
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
