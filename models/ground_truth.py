"""`perception evaluate`: model sets against ground truth, per source and condition.

    perception evaluate --models multitask-lite --models yolox-nano,twinlitenet \
        --data ../shared/assets/drives/labeled/comma10k ../shared/assets/drives/labeled/kitti_road

Each `--models` value is one model set (comma-separated, as `perception run --models` takes
it) run through the runtime's `Perceiver`, so a set is scored exactly as users run it: its own
preprocessing, score threshold and NMS. Sets are scored side by side on the same frames:
- drivable / road IoU and lane IoU (masks at frame size, summed over the frames);
- box precision, recall and F1 at IoU 0.5 per group (vehicle = bicycle, car, motorcycle, bus,
  truck; person) and for both together;
- the hood: predicted drivable pixels and boxes on our own car (`HOOD_BOX_FRACTION` of a box
  inside it), where it is known: comma10k's "my car" class, or `--camera` with a hood polygon.

`--held-out-from DISTILLED` keeps only the frames of sources that distilled folder does not
train on, so a model is scored on roads it never saw (frames are matched by source id, the
drive or sequence, as `perception train` matches them).

Rows are per dataset and condition (day, dusk, night, rain where the data states it) and per
dataset over all conditions. Every folder is read before a model loads; a label that does not
fit its frame (size, palette) stops the run with one line and nothing written. Needs no torch.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from models.data import (
    DataError,
    Record,
    Sample,
    detection_arrays,
    distilled_index,
    load,
    read_labelled,
)
from models.metrics import BoxCounts, MaskIoU
from perception.driving.camera import CameraModel, fit_to_frame, load_camera
from perception.driving.hood import HOOD_BOX_FRACTION, hood_box_fraction, hood_mask
from perception.frames import Frame
from perception.logs.files import write_atomically
from perception.pipeline import Perceiver
from perception.results import FrameResult
from perception.zoo.registry import model_names, resolve


@dataclass
class Scores:
    """One model set's figures on one group of frames."""

    frames: int = 0
    drivable: MaskIoU = field(default_factory=MaskIoU)
    lanes: MaskIoU = field(default_factory=MaskIoU)
    boxes: BoxCounts = field(default_factory=BoxCounts)
    box_frames: int = 0
    hood_frames: int = 0
    hood_drivable_pixels: int = 0
    hood_boxes: int = 0

    def add(self, result: FrameResult, sample: Sample, hood: np.ndarray | None) -> None:
        self.frames += 1
        drivable = result.mask_at_frame_size("drivable")
        if sample.drivable is not None and drivable is not None:
            self.drivable.add(drivable, sample.drivable)
        lanes = result.mask_at_frame_size("lanes")
        if sample.lanes is not None and lanes is not None:
            self.lanes.add(lanes, sample.lanes)
        boxes, classes, scores = detection_arrays(result.detections)
        if sample.boxes is not None:
            self.box_frames += 1
            self.boxes.add(boxes, scores, classes, sample.boxes, sample.classes)
        if hood is not None:
            self.hood_frames += 1
            if drivable is not None:
                self.hood_drivable_pixels += int(np.count_nonzero(drivable & hood))
            integral = cv2.integral(hood)
            self.hood_boxes += sum(hood_box_fraction(tuple(box), integral) >= HOOD_BOX_FRACTION
                                   for box in boxes)

    def figures(self) -> dict[str, float | int | None]:
        """The figures this group has labels for; None where undefined (no box at all)."""
        row: dict[str, float | int | None] = {"frames": self.frames}
        if self.drivable.union:
            row["drivable_iou"] = self.drivable.value
        if self.lanes.union:
            row["lane_iou"] = self.lanes.value
        if self.box_frames:
            for group, values in self.boxes.values().items():
                name = "vehicle+person" if group == "all" else group
                for key in ("precision", "recall", "f1"):
                    row[f"{name}_{key}"] = None if math.isnan(values[key]) else values[key]
        if self.hood_frames:
            row["hood_frames"] = self.hood_frames
            row["hood_drivable_pixels"] = self.hood_drivable_pixels
            row["hood_boxes"] = self.hood_boxes
        return row


def dataset_of(record: Record) -> str:
    return record.source.split("/")[0]


def frame_hood(sample: Sample, camera: CameraModel | None) -> np.ndarray | None:
    """The hood of a frame: its ground truth, else the camera file's polygon fitted to it."""
    if sample.hood is not None:
        return sample.hood if sample.hood.any() else None
    if camera is None:
        return None
    height, width = sample.image.shape[:2]
    return hood_mask(fit_to_frame(camera, width, height))


def evaluate(sets: dict[str, Perceiver], records: list[Record],
             camera: CameraModel | None = None) -> dict[str, dict[str, dict[str, dict]]]:
    """{dataset: {condition or "all": {model set: figures}}}."""
    scores: dict[tuple[str, str, str], Scores] = defaultdict(Scores)
    for index, record in enumerate(tqdm(records, desc="evaluate", unit="frame")):
        sample = load(record)
        hood = frame_hood(sample, camera)
        frame = Frame(sample.image, 0.0, index, str(record.image))
        for name, perceiver in sets.items():
            (result,) = perceiver.perceive([frame])
            for condition in {record.condition, "all"}:
                scores[(dataset_of(record), condition, name)].add(result, sample, hood)
    table: dict[str, dict[str, dict[str, dict]]] = {}
    for (dataset, condition, name), found in sorted(scores.items()):
        table.setdefault(dataset, {}).setdefault(condition, {})[name] = found.figures()
    return table


def format_table(table: dict[str, dict[str, dict[str, dict]]], names: list[str]) -> str:
    """A Markdown table: one row per dataset, condition and figure, one column per set."""
    lines = ["| dataset | condition | figure | " + " | ".join(names) + " |",
             "|---|---|---|" + "---:|" * len(names)]
    for dataset, conditions in table.items():
        for condition, by_set in conditions.items():
            if condition == "all" and len(conditions) == 2:
                continue  # one condition: its row is the whole dataset
            keys = list(dict.fromkeys(key for row in by_set.values() for key in row))
            for key in keys:
                cells = [by_set.get(name, {}).get(key) for name in names]
                text = ["-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
                        for v in cells]
                lines.append(f"| {dataset} | {condition} | {key} | " + " | ".join(text) + " |")
    return "\n".join(lines)


def held_out(records: list[Record], distilled: Path) -> list[Record]:
    """The records of sources a distilled folder never trains on (`perception train` drops
    its validation sources from every labelled set too)."""
    trained = {frame["source"] for frame in distilled_index(distilled)
               if frame["split"] == "train"}
    kept = [record for record in records if record.source not in trained]
    if not kept:
        raise DataError(f"--held-out-from {distilled}: every frame given is of a source it "
                        "trains on; nothing is left to score")
    print(f"held out from {distilled}: {len(kept)} of {len(records)} frames", file=sys.stderr)
    return kept


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", action="append", required=True, metavar="M[,M2]",
                        help="one model set (comma-separated zoo names or .onnx/.yaml files); "
                             "repeat to compare sets side by side, e.g. --models "
                             "multitask-lite --models yolox-nano,twinlitenet")
    parser.add_argument("--data", type=Path, nargs="+", action="extend", required=True,
                        metavar="DIR", help="labelled folders: comma10k, BDD100K drivable, "
                                            "CamVid, KITTI object, KITTI road, TuSimple")
    parser.add_argument("--camera", type=Path, metavar="CAMERA.yaml",
                        help="a camera file whose hood polygon marks the hood in frames "
                             "without a hood label")
    parser.add_argument("--held-out-from", type=Path, metavar="DISTILLED",
                        help="score only frames of sources this distilled folder does not "
                             "train on (its validation sources, and sources it lacks)")
    parser.add_argument("--json", type=Path, help="also write the figures here")


def main(args: argparse.Namespace) -> int:
    camera = load_camera(args.camera) if args.camera else None
    records = [record for folder in args.data for record in read_labelled(folder)]
    if args.held_out_from:
        records = held_out(records, args.held_out_from)
    if len(set(args.models)) != len(args.models):
        raise DataError("--models: the same model set is given twice")
    resolved = {text: [resolve(name) for name in model_names(text)] for text in args.models}
    sets = {text: Perceiver(models) for text, models in resolved.items()}
    try:
        table = evaluate(sets, records, camera)
    finally:
        for perceiver in sets.values():
            perceiver.close()
    print(format_table(table, list(sets)))
    if args.json:
        write_atomically(args.json, json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    from models.command import standalone

    sys.exit(standalone("evaluate", add_arguments, main, __doc__))
