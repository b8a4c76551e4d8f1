"""Training our multi-task network: teacher distillation mixed with supervised labels.

    perception train --data data/distilled --out runs/lite --steps 6000
    perception train --data data/distilled --kitti KITTI/training --out runs/lite --resume

Each step draws a batch of frames from the distilled folders (teacher pseudo-labels for boxes,
drivable area and lanes) and from any supervised sets given (BDD100K, KITTI, TuSimple, CamVid,
CARLA recordings: whatever labels a frame has), augments them with OpenCV, and sums the losses
of the labels each frame has: a supervised frame's losses are scaled by `--supervised-weight`.
Frames of the distilled folders' validation sources are never trained on, whichever reader
they come through.

Every random choice derives from `--seed` and the step number, so a resumed run continues
exactly where it stopped. Checkpoints (`last.pt`, written atomically) hold the model, its EMA,
the optimizer and the step; TensorBoard logs go to `<out>/tb`. CPU by default, CUDA when there.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from models import data as readers
from models.augment import Augment, augment, resize
from models.checkpoint import (
    CheckpointError,
    build_net,
    load_checkpoint,
    pick_device,
    save_checkpoint,
)
from models.data import DataError, Record, Sample, load
from models.metrics import BoxAP, MaskIoU
from models.net import ARCHITECTURE, Deployed, MultiTaskNet, NetConfig, cell_centres, decode_boxes
from perception.decode import nms
from perception.errors import PerceptionError
from perception.logs.files import write_atomically
from perception.multitask_decode import candidates

MAX_BOXES = 64  # per frame after augmentation; more are rare and dropped (smallest first)
SEG_WEIGHTS = {"drivable": 1.0, "lanes": 2.0}  # thin lane lines need the extra push


# ---------------------------------------------------------------------------- data


class Frames(Dataset):
    """Records -> augmented, fixed-size tensors; an item is (record index, augmentation seed)."""

    def __init__(self, records: list[Record], weights: list[float], size: tuple[int, int],
                 train: bool = True, preload: bool = False) -> None:
        self.records, self.weights, self.size, self.train = records, weights, size, train
        self.augment = Augment()
        self.cache: dict[int, Sample] = {}
        if preload:  # decoded once in the parent; workers share the pages
            for i in tqdm(range(len(records)), desc="preload", unit="frame"):
                self.cache[i] = load(records[i])

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, seed = item
        sample = self.cache.get(index) or load(self.records[index])
        if self.train:
            sample = augment(sample, self.size, np.random.default_rng(seed), self.augment)
        else:
            sample = resize(sample, self.size)
        return to_tensors(sample, self.weights[index], self.size)


def to_tensors(sample: Sample, weight: float, size: tuple[int, int]) -> dict[str, torch.Tensor]:
    width, height = size
    boxes = torch.zeros(MAX_BOXES, 4)
    classes = torch.full((MAX_BOXES,), -1, dtype=torch.long)
    if sample.boxes is not None and len(sample.boxes):
        order = np.argsort(-np.prod(sample.boxes[:, 2:] - sample.boxes[:, :2], 1))[:MAX_BOXES]
        boxes[:len(order)] = torch.from_numpy(sample.boxes[order])
        classes[:len(order)] = torch.from_numpy(sample.classes[order].astype(np.int64))
    empty = torch.zeros(height, width, dtype=torch.uint8)

    def mask(pixels: np.ndarray | None) -> torch.Tensor:
        return empty if pixels is None else torch.from_numpy(np.ascontiguousarray(pixels))

    return {"image": torch.from_numpy(np.ascontiguousarray(sample.image)).permute(2, 0, 1),
            "boxes": boxes, "classes": classes,
            "has_boxes": torch.tensor(sample.boxes is not None),
            "drivable": mask(sample.drivable), "has_drivable": torch.tensor(
                sample.drivable is not None),
            "lanes": mask(sample.lanes), "has_lanes": torch.tensor(sample.lanes is not None),
            "weight": torch.tensor(weight, dtype=torch.float32)}


def source_balanced(records: list[Record], balance: float) -> np.ndarray | None:
    """Per-frame draw probabilities that give each dataset (the source's first part: camvid,
    bdd, comma10k, ...) a share proportional to its frame count to the power 1 - `balance`.

    0 draws every frame equally (None), 1 gives every dataset the same share, 0.5 a share
    proportional to the square root of its size. Without it a few hundred frames of one
    CamVid drive outweigh the 14 BDD100K frames 20 to 1, and the student underfits the
    dashboard cameras (hood, night) that only the small datasets show."""
    if balance == 0:
        return None
    datasets = [record.source.split("/")[0] for record in records]
    counts = Counter(datasets)
    weights = np.array([counts[dataset] ** -balance for dataset in datasets])
    return weights / weights.sum()


class StepBatches:
    """Batch sampler: batch k of a run is a function of (seed, k) alone, so resuming at step s
    replays exactly the batches an uninterrupted run would have drawn. `probabilities` (per
    frame, `source_balanced`) or uniform."""

    def __init__(self, size: int, batch: int, seed: int, start: int, stop: int,
                 probabilities: np.ndarray | None = None) -> None:
        self.size, self.batch, self.seed, self.start, self.stop = size, batch, seed, start, stop
        self.probabilities = probabilities

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.stop):
            rng = np.random.default_rng([self.seed, step])
            if self.probabilities is None:
                indices = rng.integers(0, self.size, self.batch)
            else:
                indices = rng.choice(self.size, self.batch, p=self.probabilities)
            seeds = rng.integers(0, 2**63 - 1, self.batch)
            yield list(zip(indices.tolist(), seeds.tolist(), strict=True))


def gather_records(args: argparse.Namespace) -> tuple[list[Record], list[float], list[Record]]:
    """Training records with their loss weights, and the held-out validation records."""
    train, weights, validation = [], [], []
    for folder in args.data or []:
        train += readers.read_distilled(folder, "train")
        validation += readers.read_distilled(folder, "val")
    weights = [1.0] * len(train)
    supervised: list[Record] = []
    for folder in args.kitti or []:
        supervised += readers.read_kitti(folder)
    for folder in args.tusimple or []:
        supervised += readers.read_tusimple(folder)
    for folder in args.camvid or []:
        supervised += readers.read_camvid_road(folder)
    for folder in args.labelled or []:
        supervised += readers.read_labelled(folder)
    for recording in args.sim or []:
        supervised += readers.read_sim_recording(recording)
    bdd_labels = (args.bdd_detections, args.bdd_drivable, args.bdd_lanes)
    if (args.bdd_images is None) != all(label is None for label in bdd_labels):
        raise DataError("BDD100K needs --bdd-images together with at least one of "
                        "--bdd-detections, --bdd-drivable, --bdd-lanes")
    if args.bdd_images:
        supervised += readers.read_bdd(args.bdd_images, args.bdd_detections, args.bdd_drivable,
                                       args.bdd_lanes)
    held_out = {record.source for record in validation}
    supervised = [record for record in supervised if record.source not in held_out]
    for record in tqdm(supervised, desc="check labels", unit="frame", disable=not supervised):
        readers.load(record)  # a label that does not fit its frame stops the run now
    train += supervised
    weights += [args.supervised_weight] * len(supervised)
    if not train:
        raise DataError("nothing to train on: give --data (a distilled folder) and/or a "
                        "labelled set (--kitti, --tusimple, --camvid, --labelled, "
                        "--bdd-images, --sim)")
    return train, weights, validation


# ---------------------------------------------------------------------------- losses


def giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    top_left, bottom_right = torch.max(a[:, :2], b[:, :2]), torch.min(a[:, 2:], b[:, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(1)
    union = (a[:, 2:] - a[:, :2]).prod(1) + (b[:, 2:] - b[:, :2]).prod(1) - inter
    iou = inter / union.clamp(min=1e-6)
    hull = (torch.max(a[:, 2:], b[:, 2:]) - torch.min(a[:, :2], b[:, :2])).prod(1)
    return iou - (hull - union) / hull.clamp(min=1e-6)


@torch.no_grad()
def assign(centres: torch.Tensor, boxes: torch.Tensor, classes: torch.Tensor, stride: int,
           grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each grid cell's ground-truth box index (B, A), and which cells are positive (B, A).

    A cell is positive for a box when its centre lies inside the box and within 2.5 strides of
    the box centre, or when it is the cell holding the box centre (so tiny boxes get one);
    a cell claimed by several boxes takes the smallest.
    """
    valid = classes >= 0  # (B, M)
    cx, cy = centres[:, 0].view(1, -1, 1), centres[:, 1].view(1, -1, 1)  # (1, A, 1)
    x1, y1, x2, y2 = (boxes[..., i].unsqueeze(1) for i in range(4))  # (B, 1, M)
    gcx, gcy = (x1 + x2) / 2, (y1 + y2) / 2
    radius = 2.5 * stride
    inside = (cx > x1) & (cx < x2) & (cy > y1) & (cy < y2)
    near = ((cx - gcx).abs() < radius) & ((cy - gcy).abs() < radius)
    rows, columns = grid
    centre_cell = ((gcy / stride).floor().clamp(0, rows - 1) * columns
                   + (gcx / stride).floor().clamp(0, columns - 1))
    cell_index = torch.arange(centres.shape[0], device=centres.device).view(1, -1, 1)
    match = ((inside & near) | (cell_index == centre_cell)) & valid.unsqueeze(1)
    area = ((x2 - x1) * (y2 - y1)).expand_as(match)
    cost = torch.where(match, area, torch.full_like(area, float("inf")))
    best, index = cost.min(-1)
    return index, torch.isfinite(best)


def detection_loss(det: torch.Tensor, batch: dict[str, torch.Tensor], stride: int
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    boxes, logits = decode_boxes(det, stride)
    centres = cell_centres(det, stride)
    index, positive = assign(centres, batch["boxes"], batch["classes"], stride, det.shape[-2:])
    labelled = batch["has_boxes"].float() * batch["weight"]  # (B,)
    positive = positive & (labelled > 0).unsqueeze(1)
    count = positive.sum().clamp(min=1).float()
    objectness = F.binary_cross_entropy_with_logits(logits[..., 0], positive.float(),
                                                    reduction="none")
    objectness = (objectness.sum(1) * labelled).sum() / count
    target_boxes = torch.gather(batch["boxes"], 1, index.unsqueeze(-1).expand(-1, -1, 4))
    target_classes = torch.gather(batch["classes"], 1, index)
    cell_weight = labelled.unsqueeze(1).expand_as(positive)[positive]
    box = ((1 - giou(boxes[positive], target_boxes[positive])) * cell_weight).sum() / count
    one_hot = F.one_hot(target_classes[positive].clamp(min=0), logits.shape[-1] - 1).float()
    classification = (F.binary_cross_entropy_with_logits(
        logits[..., 1:][positive], one_hot, reduction="none").sum(1) * cell_weight).sum() / count
    total = objectness + classification + 5.0 * box
    return total, {"det/objectness": objectness.item(), "det/class": classification.item(),
                   "det/box": box.item(), "det/positives": positive.sum().item()}


def mask_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-frame BCE + soft Dice (Dice keeps thin lane lines from vanishing), weighted."""
    target = target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean((1, 2))
    probability = torch.sigmoid(logits)
    intersection = (probability * target).sum((1, 2))
    dice = 1 - (2 * intersection + 1) / (probability.sum((1, 2)) + target.sum((1, 2)) + 1)
    return ((bce + dice) * weight).sum() / weight.sum().clamp(min=1e-6)


def total_loss(net: MultiTaskNet, batch: dict[str, torch.Tensor]
               ) -> tuple[torch.Tensor, dict[str, float]]:
    det, seg = (t.float() for t in net(batch["image"].float() / 255))  # losses in fp32
    loss, logs = detection_loss(det, batch, net.stride)
    for channel, name in enumerate(("drivable", "lanes")):
        weight = batch[f"has_{name}"].float() * batch["weight"]
        part = mask_loss(seg[:, channel], batch[name], weight)
        logs[f"seg/{name}"] = part.item()
        loss = loss + SEG_WEIGHTS[name] * part
    logs["loss"] = loss.item()
    return loss, logs


# ---------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(net: MultiTaskNet, records: list[Record], size: tuple[int, int],
             device: torch.device, batch: int = 16) -> dict[str, float]:
    """Agreement with the labels of `records` at the network's input size (quick, in-loop)."""
    deployed = Deployed(net).eval()
    drivable, lanes, boxes = MaskIoU(), MaskIoU(), BoxAP()
    frames = Frames(records, [1.0] * len(records), size, train=False)
    for start in range(0, len(records), batch):
        items = [frames[(i, 0)] for i in range(start, min(start + batch, len(records)))]
        images = torch.stack([item["image"] for item in items]).to(device).float() / 255
        rows, drivable_p, lanes_p = (t.cpu().numpy() for t in deployed(images))
        for k, item in enumerate(items):
            if item["has_drivable"]:
                drivable.add(drivable_p[k] > 0.5, item["drivable"].numpy())
            if item["has_lanes"]:
                lanes.add(lanes_p[k] > 0.5, item["lanes"].numpy())
            if item["has_boxes"]:
                found, scores, classes = candidates(rows[k], 0.01)
                keep = nms(found, scores, classes, 0.01, 0.45)
                valid = item["classes"].numpy() >= 0
                boxes.add(found[keep], scores[keep], classes[keep],
                          item["boxes"].numpy()[valid], item["classes"].numpy()[valid])
    return {"val/drivable_iou": drivable.value, "val/lane_iou": lanes.value,
            "val/box_map50": boxes.mean()}


# ---------------------------------------------------------------------------- the loop


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(args: argparse.Namespace) -> dict[str, float]:
    torch.manual_seed(args.seed)
    config = NetConfig(width=args.width, height=args.height, seg_context=args.seg_context)
    size = (config.width, config.height)
    device = pick_device(args.device)
    torch.backends.cudnn.benchmark = True
    out: Path = args.out
    records, weights, validation = gather_records(args)
    net = MultiTaskNet(config).to(device)
    ema = torch.optim.swa_utils.AveragedModel(
        net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(args.ema), use_buffers=True)
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    start = 0
    checkpoint = out / "last.pt"
    if args.resume:
        state = load_checkpoint(checkpoint, config)
        if not {"model", "ema_state", "optimizer", "args"} <= state.keys():
            raise CheckpointError(f"{checkpoint}: holds weights but no training state to "
                                  "resume (written by `perception export --torch`?)")
        drawn = {"seed": None, "batch": None, "source_balance": 0.0}  # key: value of older runs
        changed = [f"--{key.replace('_', '-')} {state['args'].get(key, old)} "
                   f"(now {getattr(args, key)})" for key, old in drawn.items()
                   if state["args"].get(key, old) != getattr(args, key)]
        if changed:  # batch k is a function of (seed, k, batch size, balance): another draws
            raise CheckpointError(f"{checkpoint}: resume with the run's own "
                                  f"{', '.join(changed)}, or start a new run with --init")
        net.load_state_dict(state["model"])
        ema.load_state_dict(state["ema_state"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
    elif args.init:  # fine-tune: weights from another run, fresh optimizer and schedule
        initial = load_checkpoint(args.init, config, grow=True)
        net.load_state_dict(build_net(initial, config=config).state_dict())
        ema.module.load_state_dict(net.state_dict())
    if not args.resume and checkpoint.exists():
        raise CheckpointError(f"{checkpoint} exists: pass --resume to continue that run, or "
                              "choose another --out (nothing was overwritten)")
    if out.exists() and not out.is_dir():
        raise PerceptionError(f"--out {out}: is a file, not a run folder")
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / "args.json", json.dumps(vars(args), default=str, indent=1))
    frames = Frames(records, weights, size, train=True, preload=args.preload)
    batches = StepBatches(len(records), args.batch, args.seed, start, args.steps,
                          source_balanced(records, args.source_balance))
    loader = DataLoader(frames, batch_sampler=batches,
                        num_workers=args.workers, pin_memory=device.type == "cuda",
                        persistent_workers=False)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out / "tb"), purge_step=start)
    warmup = max(1, args.steps // 30)
    metrics: dict[str, float] = {}
    progress = tqdm(loader, total=args.steps, initial=start, desc="train", unit="step")
    begin = time.perf_counter()

    def save(step: int) -> None:
        save_checkpoint(checkpoint, {
            "architecture": ARCHITECTURE, "config": config.to_dict(), "step": step,
            "model": net.state_dict(), "ema": ema.module.state_dict(),
            "ema_state": ema.state_dict(),
            "optimizer": optimizer.state_dict(), "args": json.loads(json.dumps(
                vars(args), default=str)), "metrics": metrics})

    step = start
    net.train()
    for step, batch in enumerate(progress, start):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, warmup)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, torch.bfloat16, enabled=args.amp):
            loss, logs = total_loss(net, batch)
        if not torch.isfinite(loss):
            raise PerceptionError(f"loss became {loss.item()} at step {step}; lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        optimizer.step()
        ema.update_parameters(net)
        if step % 20 == 0:
            for key, value in logs.items():
                writer.add_scalar(key, value, step)
            writer.add_scalar("lr", optimizer.param_groups[0]["lr"], step)
            progress.set_postfix(loss=f"{logs['loss']:.3f}")
        done = step + 1
        if validation and (done % args.eval_every == 0 or done == args.steps):
            metrics = evaluate(ema.module, validation, size, device)
            for key, value in metrics.items():
                writer.add_scalar(key, value, done)
            progress.write(f"step {done}: " + ", ".join(f"{k} {v:.3f}"
                                                        for k, v in metrics.items()))
            net.train()
        if done % args.save_every == 0 or done == args.steps:
            save(done)
    writer.close()
    if start >= args.steps:
        print(f"{checkpoint}: already trained to step {start} (>= --steps {args.steps})")
    else:
        print(f"{checkpoint}: step {args.steps}, {time.perf_counter() - begin:.0f} s")
    return metrics


def unit_interval(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is outside [0, 1]")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, action="append",
                        help="a distilled folder (python -m models.distill); repeatable")
    parser.add_argument("--kitti", type=Path, action="append",
                        help="KITTI object folder (image_2/, label_2/); repeatable")
    parser.add_argument("--tusimple", type=Path, action="append",
                        help="TuSimple folder with label_data.json; repeatable")
    parser.add_argument("--camvid", type=Path, action="append",
                        help="SegNet CamVid folder (images/, labels/; road = class 3)")
    parser.add_argument("--labelled", type=Path, action="append",
                        help="a labelled folder told by its layout (comma10k, BDD100K "
                             "drivable, CamVid, KITTI, KITTI road, TuSimple); repeatable")
    parser.add_argument("--bdd-images", type=Path, help="BDD100K image folder")
    parser.add_argument("--bdd-detections", type=Path, help="BDD100K detection JSON")
    parser.add_argument("--bdd-drivable", type=Path, help="BDD100K drivable_maps/labels folder")
    parser.add_argument("--bdd-lanes", type=Path, help="BDD100K lane masks folder")
    parser.add_argument("--sim", type=Path, action="append",
                        help="a CARLA run recorded by `perception sim --ground-truth --out "
                             "FILE.mcap`; repeatable")
    parser.add_argument("--source-balance", type=unit_interval, default=0.0,
                        help="0 draws frames uniformly; 1 gives each dataset an equal share; "
                             "0.5 a share by the square root of its size")
    parser.add_argument("--supervised-weight", type=float, default=1.0,
                        help="loss weight of labelled (non-distilled) frames")
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoint, logs)")
    parser.add_argument("--resume", action="store_true", help="continue <out>/last.pt")
    parser.add_argument("--init", type=Path,
                        help="start from a checkpoint's (EMA) weights: fine-tune, new schedule; "
                             "its input size may differ, and it may have fewer --seg-context "
                             "blocks (the other layers must match)")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--width", type=int, default=NetConfig.width)
    parser.add_argument("--height", type=int, default=NetConfig.height)
    parser.add_argument("--seg-context", type=int, default=NetConfig.seg_context,
                        help="dilated residual blocks on the segmentation path (capacity)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--preload", action="store_true", help="decode all frames up front")
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--save-every", type=int, default=500)
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast (GPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda")


def main(args: argparse.Namespace) -> int:
    if args.width % 32 or args.height % 32 or min(args.width, args.height) < 32:
        raise PerceptionError("--width and --height must be positive multiples of 32")
    for option in ("steps", "batch", "eval_every", "save_every"):
        if getattr(args, option) < 1:
            raise PerceptionError(f"--{option.replace('_', '-')} must be at least 1")
    if min(args.workers, args.seg_context) < 0 or not (args.lr > 0 and 0 <= args.ema < 1):
        raise PerceptionError("--workers and --seg-context must be >= 0, --lr > 0 and --ema in "
                              "[0, 1)")
    train(args)
    return 0


if __name__ == "__main__":
    import sys

    from models.command import standalone

    sys.exit(standalone("train", add_arguments, main, __doc__))
