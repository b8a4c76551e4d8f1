"""Our pipeline vs a plain sequential loop on a real video, yolox-nano + twinlitenet.

    python scripts/benchmark_pipeline.py [--video solidWhiteRight.mp4] [--frames N]

Both sides run in the same invocation, each in its own child process (so each gets its own
peak resident memory), on the same frames, and their outputs are compared:
- pipeline: `Perceiver.stream`, exactly as `perception run` uses it (frames decoded while the
  models work, both models concurrently with one ONNX Runtime thread each, channel compare
  instead of argmax, masks kept at model resolution);
- baseline: the straightforward loop, one frame at a time: decode the video frame, preprocess,
  run, decode, with default ONNX Runtime sessions, argmax and full-size nearest resizes.
Prints frames/s, median and p99 per stage, CPU use, peak RSS, the ratio and output agreement.
Measures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import platform
import resource
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ASSETS = Path(os.environ.get("PERCEPTION_ASSETS", REPO.parent / "shared" / "assets"))
DEFAULT_VIDEO = ASSETS / "drives" / "udacity_lanelines_p1" / "solidWhiteRight.mp4"
MODELS = ["yolox-nano", "twinlitenet"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


# ---------------------------------------------------------------------------- ours

def run_pipeline(video: str, frames: int | None, workers: int | None = None,
                 in_flight: int | None = None) -> dict:
    from perception.frames import open_source
    from perception.pipeline import Perceiver

    perceiver = Perceiver.from_names(MODELS, workers=workers)
    timings, detections, masks = [], [], []
    cpu0, start = cpu_seconds(), time.perf_counter()
    source = itertools.islice(open_source(video), frames)
    for _, result in perceiver.stream(source, in_flight=in_flight):
        timings.append(result.timings_ms)
        detections.append([(d.class_id, d.score, d.box) for d in result.detections])
        masks.append((np.packbits(result.drivable), np.packbits(result.lanes),
                      result.drivable.shape))
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    perceiver.close()
    return {"timings": timings, "detections": detections, "masks": masks, "wall": wall,
            "cpu": cpu, "peak_rss_mb": peak_rss_mb()}


# ---------------------------------------------------------------------------- baseline

def run_baseline(video: str, frames: int | None) -> dict:
    """One frame at a time, the plain way; written out in full on purpose."""
    import onnxruntime as ort

    from perception.zoo.registry import resolve

    (yolox_spec, yolox_path), (twin_spec, twin_path) = (resolve(name) for name in MODELS)
    yolox = ort.InferenceSession(str(yolox_path), providers=["CPUExecutionProvider"])
    twin = ort.InferenceSession(str(twin_path), providers=["CPUExecutionProvider"])
    grid, strides = [], []
    for stride in (8, 16, 32):
        ys, xs = np.meshgrid(np.arange(416 // stride), np.arange(416 // stride), indexing="ij")
        grid.append(np.stack((xs, ys), -1).reshape(-1, 2))
        strides.append(np.full((grid[-1].shape[0], 1), stride))
    grid, strides = np.concatenate(grid).astype(np.float32), np.concatenate(strides)
    for _ in range(2):  # the same warm-up the pipeline's sessions get
        yolox.run(None, {"images": np.zeros((1, 3, 416, 416), np.float32)})
        twin.run(None, {"images": np.zeros((1, 3, 360, 640), np.float32)})

    capture = cv2.VideoCapture(video)
    timings, detections, masks = [], [], []
    cpu0, start = cpu_seconds(), time.perf_counter()
    while frames is None or len(timings) < frames:
        t0 = time.perf_counter()
        ok, image = capture.read()
        if not ok:
            break
        height, width = image.shape[:2]
        t1 = time.perf_counter()
        r = min(416 / height, 416 / width)
        canvas = np.full((416, 416, 3), 114, np.uint8)
        canvas[:int(height * r), :int(width * r)] = cv2.resize(image, (int(width * r),
                                                                       int(height * r)))
        x = canvas.transpose(2, 0, 1)[None].astype(np.float32)
        t2 = time.perf_counter()
        rows = yolox.run(None, {"images": x})[0][0]
        t3 = time.perf_counter()
        class_ids = rows[:, 5:].argmax(1)
        scores = rows[:, 4] * rows[np.arange(len(rows)), 5 + class_ids]
        keep = scores >= yolox_spec.score_threshold
        centre = (rows[keep, :2] + grid[keep]) * strides[keep]
        size = np.exp(rows[keep, 2:4]) * strides[keep]
        boxes = np.concatenate((centre - size / 2, centre + size / 2), 1) / r
        boxes = np.clip(boxes, 0, [width, height, width, height])
        xywh = np.concatenate((boxes[:, :2], boxes[:, 2:] - boxes[:, :2]), 1)
        kept = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores[keep].tolist(),
                                       class_ids[keep].tolist(), yolox_spec.score_threshold,
                                       yolox_spec.nms_iou)
        found = [(int(class_ids[keep][i]), float(scores[keep][i]), tuple(boxes[i]))
                 for i in np.asarray(kept, int).reshape(-1)]
        t4 = time.perf_counter()
        rgb = cv2.cvtColor(cv2.resize(image, (640, 360)), cv2.COLOR_BGR2RGB)
        x = np.ascontiguousarray((rgb.astype(np.float32) / 255).transpose(2, 0, 1)[None])
        t5 = time.perf_counter()
        drivable, lanes = twin.run(["da", "ll"], {"images": x})
        t6 = time.perf_counter()
        drivable = cv2.resize(np.argmax(drivable[0], 0).astype(np.uint8), (width, height),
                              interpolation=cv2.INTER_NEAREST)
        lanes = cv2.resize(np.argmax(lanes[0], 0).astype(np.uint8), (width, height),
                           interpolation=cv2.INTER_NEAREST)
        t7 = time.perf_counter()
        timings.append({"read": (t1 - t0) * 1e3, "yolox-nano/preprocess": (t2 - t1) * 1e3,
                        "yolox-nano/inference": (t3 - t2) * 1e3,
                        "yolox-nano/decode": (t4 - t3) * 1e3,
                        "twinlitenet/preprocess": (t5 - t4) * 1e3,
                        "twinlitenet/inference": (t6 - t5) * 1e3,
                        "twinlitenet/decode": (t7 - t6) * 1e3, "total": (t7 - t0) * 1e3})
        detections.append(found)
        masks.append((np.packbits(drivable), np.packbits(lanes), drivable.shape))
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    return {"timings": timings, "detections": detections, "masks": masks, "wall": wall,
            "cpu": cpu, "peak_rss_mb": peak_rss_mb()}


# ---------------------------------------------------------------------------- comparing

def agreement(ours: dict, baseline: dict) -> dict:
    """Mask IoU (ours resized to frame size as on writing) and detection equality."""
    ious = {"drivable": [], "lanes": []}
    same_detections = 0
    for our_masks, base_masks, our_dets, base_dets in zip(
            ours["masks"], baseline["masks"], ours["detections"], baseline["detections"],
            strict=True):
        height, width = base_masks[2]
        for k, which in enumerate(ious):
            mine = np.unpackbits(our_masks[k])[:np.prod(our_masks[2])].reshape(our_masks[2])
            mine = cv2.resize(mine, (width, height), interpolation=cv2.INTER_NEAREST)
            theirs = np.unpackbits(base_masks[k])[:height * width].reshape(height, width)
            union = np.logical_or(mine, theirs).sum()
            ious[which].append(np.logical_and(mine, theirs).sum() / union if union else 1.0)
        same_detections += same(our_dets, base_dets)
    return {"min_drivable_iou": float(min(ious["drivable"])),
            "min_lane_iou": float(min(ious["lanes"])),
            "frames_with_identical_detections": same_detections}


def same(ours: list, theirs: list) -> bool:
    """Same detections up to the result's rounding (score 4 decimals, box 0.1 px)."""
    ours, theirs = sorted(ours, key=lambda d: -d[1]), sorted(theirs, key=lambda d: -d[1])
    return len(ours) == len(theirs) and all(
        a[0] == b[0] and abs(a[1] - b[1]) < 1e-3 and np.abs(np.subtract(a[2], b[2])).max() < 0.5
        for a, b in zip(ours, theirs, strict=True))


def stats(timings: list[dict]) -> dict[str, tuple[float, float]]:
    stages: dict[str, list[float]] = {}
    for frame in timings:
        for stage, ms in frame.items():
            stages.setdefault(stage, []).append(ms)
    return {s: (float(np.median(v)), float(np.percentile(v, 99))) for s, v in stages.items()}


def in_child(target, *args) -> dict:
    """Run one side in a fresh process: its own peak RSS, nothing shared with the other."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(target, args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=str(DEFAULT_VIDEO))
    parser.add_argument("--frames", type=int, default=None, help="first N frames (all)")
    parser.add_argument("--baseline-first", action="store_true")
    parser.add_argument("--workers", type=int, help="pipeline threads (default: one per core)")
    parser.add_argument("--in-flight", type=int, help="frames at work (default: 2 x workers)")
    args = parser.parse_args()
    if not Path(args.video).is_file():
        sys.exit(f"benchmark: {args.video}: no such video (set PERCEPTION_ASSETS)")
    os.environ.setdefault("PERCEPTION_MODELS_MIRROR", str(ASSETS / "models"))

    order = [("baseline", run_baseline, ()),
             ("pipeline", run_pipeline, (args.workers, args.in_flight))]
    if not args.baseline_first:
        order.reverse()
    runs = {name: in_child(target, args.video, args.frames, *extra)
            for name, target, extra in order}

    cpu_model = next((line.split(":", 1)[1].strip() for line in
                      Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
    print(f"machine: {os.cpu_count()} CPUs ({cpu_model}), Python {platform.python_version()}")
    print(f"video: {args.video}, models: {', '.join(MODELS)}")
    fps = {}
    for name, run in runs.items():
        frames = len(run["timings"])
        fps[name] = frames / run["wall"]
        print(f"\n{name}: {frames} frames in {run['wall']:.2f} s = {fps[name]:.2f} frames/s, "
              f"CPU {run['cpu']:.1f} s ({run['cpu'] / run['wall']:.2f} cores busy, "
              f"{run['cpu'] / frames * 1e3:.0f} CPU-ms/frame), peak RSS "
              f"{run['peak_rss_mb']:.0f} MB")
        print(f"  {'stage':<26}{'median ms':>10}{'p99 ms':>10}")
        for stage, (median, p99) in stats(run["timings"]).items():
            print(f"  {stage:<26}{median:>10.1f}{p99:>10.1f}")
    same = agreement(runs["pipeline"], runs["baseline"])
    print(f"\nratio pipeline / baseline: {fps['pipeline'] / fps['baseline']:.2f}x")
    print(f"outputs: min drivable IoU {same['min_drivable_iou']:.4f}, min lane IoU "
          f"{same['min_lane_iou']:.4f}, identical detections on "
          f"{same['frames_with_identical_detections']}/{len(runs['baseline']['timings'])} "
          "frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
