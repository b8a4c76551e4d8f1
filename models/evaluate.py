"""The model card's figures, measured in one run: agreement, ground truth, CPU latency.

    python -m models.evaluate --distilled data/distilled --drives ../shared/assets/drives \
        --model perception/zoo/embedded/multitask_lite.onnx \
        --model perception/zoo/embedded/multitask_lite.int8.onnx

1. Agreement with the teachers on the held-out validation frames of a distilled folder (whole
   drives never trained on): the student sees the ORIGINAL frame through the runtime's
   preprocessing; masks are compared at the teacher's mask resolution, boxes in frame pixels.
2. Ground truth where the shared assets have it (validation sources only): student and
   teachers side by side, masks compared at frame resolution.
3. CPU latency per frame on this machine: student (preprocess + ONNX Runtime + decode) and the
   teacher pair (`Perceiver` with yolox-nano and twinlitenet, the runtime's own path).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from models import data as readers
from models.data import DataError, Record, load
from models.distill import TEACHERS, FrameRef, read_frames
from models.metrics import BoxAP, BoxCounts, MaskIoU
from perception.decode import nms
from perception.frames import Frame
from perception.inference import OnnxModel
from perception.logs.files import write_atomically
from perception.multitask_decode import candidates, decode_multitask
from perception.pipeline import Perceiver
from perception.preprocess import preprocess
from perception.results import FrameResult
from perception.zoo.registry import resolve, spec_from_onnx

EVAL_SCORE = 0.01  # AP needs the whole ranking, not only confident boxes


class Student:
    """Our ONNX model through the runtime's preprocess -> ONNX Runtime chain."""

    def __init__(self, path: Path, threads: int = 2, name: str | None = None) -> None:
        self.spec, _ = spec_from_onnx(path)
        self.model = OnnxModel(path, providers=["CPUExecutionProvider"], threads=threads)
        self.name = name or path.name

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, ...]:
        """Boxes (frame px), scores, classes, drivable and lane probabilities (input size)."""
        batch, (placement,) = preprocess([image], self.spec.input)
        rows, drivable, lanes = self.model.run(batch)
        boxes, scores, classes = candidates(rows[0], EVAL_SCORE)
        keep = nms(boxes, scores, classes, EVAL_SCORE, self.spec.nms_iou)
        return (placement.boxes_to_frame(boxes[keep]), scores[keep], classes[keep],
                drivable[0], lanes[0])


def at_size(probability: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A probability map resized (bilinear) to (width, height), thresholded at 0.5."""
    return (cv2.resize(probability, size, interpolation=cv2.INTER_LINEAR) > 0.5).astype(np.uint8)


def teacher_results(perceiver: Perceiver, images: list[np.ndarray]) -> list[FrameResult]:
    return perceiver.perceive([Frame(image, 0.0, i, "eval") for i, image in enumerate(images)])


def agreement(students: list[Student], folder: Path, frames: list[dict]
              ) -> dict[str, dict[str, float]]:
    """Student vs the teachers' cached labels on `frames`, validation entries of the index of
    the distilled `folder`."""
    scores = {s.name: (MaskIoU(), MaskIoU(), BoxAP()) for s in students}
    # the per-frame floor and the boxes as users get them (the spec's threshold)
    worst = {s.name: 1.0 for s in students}
    counts = {s.name: BoxCounts() for s in students}
    for start in tqdm(range(0, len(frames), 16), desc="agreement", unit="batch"):
        chunk = frames[start:start + 16]
        images = read_frames([FrameRef(Path(f["origin"]), f["source"], "val", f["frame"])
                              for f in chunk])
        for entry, image in zip(chunk, images, strict=True):
            height, width = image.shape[:2]
            boxes, classes, drivable, lanes = readers.load_arrays(
                folder / entry["labels"], "boxes", "classes", "drivable", "lanes")
            stored = cv2.imread(str(folder / entry["image"]), cv2.IMREAD_GRAYSCALE)
            scale = width / stored.shape[1]
            true_boxes = boxes * np.float32(scale)
            true_classes = classes.astype(np.int64)
            mask_size = drivable.shape[::-1]
            for student in students:
                boxes, box_scores, classes, drivable_p, lanes_p = student(image)
                drivable_iou, lane_iou, box_ap = scores[student.name]
                predicted = at_size(drivable_p, mask_size)
                drivable_iou.add(predicted, drivable)
                frame_iou = MaskIoU()
                frame_iou.add(predicted, drivable)
                if frame_iou.union:
                    worst[student.name] = min(worst[student.name], frame_iou.value)
                shown = box_scores >= student.spec.score_threshold
                counts[student.name].add(boxes[shown], box_scores[shown], classes[shown],
                                         true_boxes, true_classes)
                lane_iou.add(at_size(lanes_p, mask_size), lanes)
                box_ap.add(boxes, box_scores, classes, true_boxes, true_classes)
    return {name: {"frames": len(frames), "drivable_iou": d.value,
                   "drivable_iou_min_frame": worst[name], "lane_iou": lane.value,
                   "box_map50": ap.mean(), **{f"box_ap50_{k}": v for k, v in ap.values().items()},
                   "box_f1": counts[name].values().get("all", {}).get("f1", float("nan"))}
            for name, (d, lane, ap) in scores.items()}


def ground_truth_sets(drives: Path, held_out: set[str]) -> dict[str, list[Record]]:
    """The shared assets' labelled samples, keeping only validation (never trained) sources."""
    sets = readers.labeled_assets(drives)
    return {name: [r for r in records if r.source in held_out] for name, records in sets.items()}


def against_truth(students: list[Student], perceiver: Perceiver, sets: dict[str, list[Record]]
                  ) -> dict[str, dict[str, dict[str, float]]]:
    """Per labelled set: each model's IoU or box mAP against the ground truth."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for set_name, records in sets.items():
        if not records:
            continue
        names = [s.name for s in students] + ["teachers"]
        drivable = {n: MaskIoU() for n in names}
        lanes = {n: MaskIoU() for n in names}
        boxes = {n: BoxAP() for n in names}
        for record in tqdm(records, desc=set_name, unit="frame"):
            sample = load(record)
            size = sample.image.shape[1::-1]
            teacher = teacher_results(perceiver, [sample.image])[0]
            outputs = {s.name: s(sample.image) for s in students}
            for name in names:
                if name == "teachers":
                    teacher_found, teacher_classes, teacher_scores = \
                        readers.detection_arrays(teacher.detections)
                    found = (teacher_found, teacher_scores, teacher_classes)
                    drivable_mask = teacher.mask_at_frame_size("drivable")
                    lane_mask = teacher.mask_at_frame_size("lanes")
                else:
                    b, s, c, drivable_p, lanes_p = outputs[name]
                    found = (b, s, c)
                    drivable_mask, lane_mask = at_size(drivable_p, size), at_size(lanes_p, size)
                if sample.drivable is not None:
                    drivable[name].add(drivable_mask, sample.drivable)
                if sample.lanes is not None:
                    lanes[name].add(lane_mask, sample.lanes)
                if sample.boxes is not None:
                    boxes[name].add(*found, sample.boxes, sample.classes)
        table[set_name] = {}
        for name in names:
            row: dict[str, float] = {"frames": len(records)}
            if drivable[name].union:
                row["drivable_iou"] = drivable[name].value
            if lanes[name].union:
                row["lane_iou"] = lanes[name].value
            if boxes[name].truths:
                row["box_map50"] = boxes[name].mean()
            table[set_name][name] = row
    return table


def latency(students: list[Student], perceiver: Perceiver, images: list[np.ndarray], rounds: int
            ) -> dict[str, float]:
    """Median milliseconds per frame (batch 1). Each model runs its frames as one block, the
    blocks rotating every round: ONNX Runtime's worker threads spin for a while after a run,
    so interleaving models frame by frame would charge each one its predecessor's spinning."""
    calls = {"teachers": lambda image: teacher_results(perceiver, [image])}
    calls |= {s.name: (lambda image, s=s: full_decode(s, image)) for s in students}
    timings: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            call(images[0])  # the first call after a switch is not counted
            for image in images:
                start = time.perf_counter()
                call(image)
                timings[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e3 for name, values in timings.items()}


def full_decode(student: Student, image: np.ndarray) -> None:
    """What `perception run` does per frame with our model: preprocess, run, decode."""
    batch, placements = preprocess([image], student.spec.input)
    outputs = dict(zip(student.model.output_names, student.model.run(batch), strict=True))
    decode_multitask(outputs, student.spec, placements, [image.shape[1::-1]])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, action="append", required=True,
                        help="an exported ONNX of our network; repeatable (fp32, int8, fp16)")
    parser.add_argument("--distilled", type=Path, required=True,
                        help="distilled folder whose validation split is scored")
    parser.add_argument("--drives", type=Path, help="shared assets' drives (ground truth)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (student)")
    parser.add_argument("--latency-frames", type=int, default=20)
    parser.add_argument("--latency-rounds", type=int, default=3)
    parser.add_argument("--latency-only", action="store_true", help="skip the accuracy figures")
    parser.add_argument("--json", type=Path, help="also write the figures here")


def main(args: argparse.Namespace) -> int:
    if min(args.threads, args.latency_frames, args.latency_rounds) < 1:
        raise DataError("--threads, --latency-frames and --latency-rounds must be at least 1")
    val = [f for f in readers.distilled_index(args.distilled) if f["split"] == "val"]
    if not val:
        raise DataError(f"{args.distilled}: no validation frames")
    if len({path.resolve() for path in args.model}) < len(args.model):
        raise DataError("--model: the same file is given twice")
    names = [path.name for path in args.model]  # the figures' keys: full paths where names clash
    students = [Student(path, args.threads, str(path) if names.count(path.name) > 1 else None)
                for path in args.model]
    perceiver = Perceiver([resolve(name) for name in TEACHERS])
    try:
        figures: dict = {}
        if not args.latency_only:
            figures["agreement_with_teachers"] = agreement(students, args.distilled, val)
            print(json.dumps(figures, indent=1))
        held_out = {f["source"] for f in val}
        if args.drives and not args.latency_only:
            figures["ground_truth"] = against_truth(students, perceiver,
                                                    ground_truth_sets(args.drives, held_out))
            print(json.dumps(figures["ground_truth"], indent=1))
        step = max(1, len(val) // args.latency_frames)
        picked = val[::step][:args.latency_frames]
        images = read_frames([FrameRef(Path(f["origin"]), f["source"], "val", f["frame"])
                              for f in picked])
        figures["latency_ms_per_frame"] = latency(students, perceiver, images,
                                                  args.latency_rounds)
        print(json.dumps(figures["latency_ms_per_frame"], indent=1))
    finally:
        perceiver.close()
    if args.json:
        write_atomically(args.json, json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    import sys

    from models.command import standalone

    sys.exit(standalone("evaluate", add_arguments, main, __doc__))
