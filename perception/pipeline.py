"""The perceiver: frames in, `FrameResult`s out, with every loaded model run on each frame.

Work is split into (frame, model) jobs on a small thread pool (one worker per core). ONNX
Runtime and OpenCV release the GIL, so with one intra-op thread per session the detector and
the segmenter run truly in parallel, and so do two frames of the same model (a session may be
run from several threads at once). `stream()` keeps a few frames in flight: while the models
work on frame n, the caller's thread decodes frame n+1 from the source.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perception.decode import decode_detections, decode_twinlitenet
from perception.errors import PerceptionError
from perception.frames import Frame
from perception.inference import OnnxModel
from perception.lane_lines import fit_lane_boundaries
from perception.modelspec import ModelSpec
from perception.multitask_decode import decode_multitask
from perception.preprocess import preprocess
from perception.results import Detection, FrameResult
from perception.zoo.registry import resolve


@dataclass
class ModelOutput:
    """What one model contributed to one frame: detections and/or masks, and stage timings."""

    detections: list[Detection] | None
    drivable: np.ndarray | None  # uint8 0/1 at model resolution
    lanes: np.ndarray | None
    timings_ms: dict[str, float]


class LoadedModel:
    """One model's chain: preprocess -> ONNX Runtime (or PyTorch, for a .pt) -> decode."""

    def __init__(self, spec: ModelSpec, path: Path, providers: list[str] | None = None,
                 threads: int = 1) -> None:
        self.spec = spec
        if Path(path).suffix == ".pt":  # our network's PyTorch path; torch only when asked
            try:
                from models.torch_runtime import TorchModel
            except ModuleNotFoundError as error:
                raise PerceptionError(f"{path}: the PyTorch path needs torch "
                                      "(pip install 'perception[train]')") from error
            self.session = TorchModel(path)
        else:
            self.session = OnnxModel(path, providers=providers, threads=threads)

    @property
    def takes_batches(self) -> bool:
        return self.session.fixed_batch is None

    def __call__(self, frames: list[Frame]) -> list[ModelOutput]:
        """One output per frame; the stage timings are those of the whole call."""
        name = self.spec.name
        t0 = time.perf_counter()
        batch, placements = preprocess([f.image for f in frames], self.spec.input)
        t1 = time.perf_counter()
        raw = self.session.run(batch)
        t2 = time.perf_counter()
        detections = drivable = lanes = [None] * len(frames)
        outputs = dict(zip(self.session.output_names, raw, strict=True))
        sizes = [(f.width, f.height) for f in frames]
        if self.spec.decoder == "twinlitenet":
            drivable, lanes = decode_twinlitenet(outputs["da"], outputs["ll"])
        elif self.spec.decoder == "multitask":
            detections, drivable, lanes = decode_multitask(outputs, self.spec, placements, sizes)
        else:
            detections = decode_detections(raw, self.spec, placements, sizes)
        t3 = time.perf_counter()
        timings = {f"{name}/preprocess": (t1 - t0) * 1e3, f"{name}/inference": (t2 - t1) * 1e3,
                   f"{name}/decode": (t3 - t2) * 1e3}
        return [ModelOutput(*parts, timings)
                for parts in zip(detections, drivable, lanes, strict=True)]


@dataclass
class PendingFrames:
    """Frames submitted together, with each model's jobs (one per chunk of frames)."""

    frames: list[Frame]
    jobs: list[list[Future[list[ModelOutput]]]]  # per model, per chunk, in frame order
    start: float
    timings_ms: list[dict[str, float]]  # stages measured before submission (e.g. read)


class Perceiver:
    """Runs a set of models (typically one detector and one segmenter) on frames."""

    def __init__(self, models: list[tuple[ModelSpec, Path]], providers: list[str] | None = None,
                 threads_per_model: int = 1, workers: int | None = None,
                 fit_lanes: bool = True) -> None:
        """`fit_lanes=False` leaves `lane_boundaries` empty (the lane mask is still there):
        for a caller that fits them only when asked (the service; ~2 ms a frame)."""
        self.fit_lanes = fit_lanes
        self.models = [LoadedModel(spec, path, providers, threads_per_model)
                       for spec, path in models]
        self.specs = [m.spec for m in self.models]
        self.model_names = [spec.name for spec in self.specs]
        self.workers = workers or os.cpu_count() or 1
        self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="model")

    @classmethod
    def from_names(cls, names: list[str], **options) -> Perceiver:
        """Models by zoo name, spec .yaml or .onnx path (see `perception.zoo.registry.resolve`)."""
        return cls([resolve(name) for name in names], **options)

    def perceive(self, frames: list[Frame]) -> list[FrameResult]:
        """Results for a batch of frames, in order."""
        if not frames:
            return []
        return self._collect(self._submit(frames))

    def stream(self, frames: Iterable[Frame], in_flight: int | None = None
               ) -> Iterator[tuple[Frame, FrameResult]]:
        """(frame, result) pairs for a stream of frames, in order, up to `in_flight` at work.

        Reading the next frame (video decoding) overlaps with the models working on the
        previous ones; its time is reported as the `read` stage. A Ctrl-C while reading (how a
        camera run ends) first finishes the frames already read, then raises.
        """
        in_flight = in_flight or 2 * self.workers
        pending: deque[PendingFrames] = deque()
        source = iter(frames)
        interrupted = False
        while True:
            t0 = time.perf_counter()
            try:
                frame = next(source, None)
            except KeyboardInterrupt:
                frame, interrupted = None, True
            read_ms = (time.perf_counter() - t0) * 1e3
            if frame is None:
                break
            pending.append(self._submit([frame], [{"read": read_ms}]))
            while len(pending) >= in_flight or (pending and _done(pending[0])):
                yield from self._pairs(pending.popleft())
        while pending:
            yield from self._pairs(pending.popleft())
        if interrupted:
            raise KeyboardInterrupt

    def _submit(self, frames: list[Frame], timings_ms: list[dict[str, float]] | None = None
                ) -> PendingFrames:
        jobs = []
        for model in self.models:
            chunks = [frames] if model.takes_batches else [[frame] for frame in frames]
            jobs.append([self.pool.submit(model, chunk) for chunk in chunks])
        return PendingFrames(frames, jobs, time.perf_counter(),
                             timings_ms or [{} for _ in frames])

    def _pairs(self, pending: PendingFrames) -> Iterator[tuple[Frame, FrameResult]]:
        yield from zip(pending.frames, self._collect(pending), strict=True)

    def _collect(self, pending: PendingFrames) -> list[FrameResult]:
        results = [FrameResult(frame_index=f.index, source=f.source, timestamp=f.timestamp,
                               width=f.width, height=f.height, models=self.model_names,
                               timings_ms=dict(timings))
                   for f, timings in zip(pending.frames, pending.timings_ms, strict=True)]
        for model_jobs in pending.jobs:
            outputs = [output for job in model_jobs for output in job.result()]
            for result, output in zip(results, outputs, strict=True):
                if output.detections is not None:
                    result.detections.extend(output.detections)
                if output.drivable is not None:
                    result.drivable, result.lanes = output.drivable, output.lanes
                result.timings_ms.update(output.timings_ms)
        for result in results:
            result.detections.sort(key=lambda d: -d.score)
            if self.fit_lanes and result.lanes is not None:
                started = time.perf_counter()
                result.lane_boundaries = fit_lane_boundaries(result.lanes, result.width,
                                                             result.height)
                result.timings_ms["lane_lines"] = (time.perf_counter() - started) * 1e3
        total_ms = (time.perf_counter() - pending.start) * 1e3
        for result in results:
            result.timings_ms["total"] = total_ms
        return results

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def __enter__(self) -> Perceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _done(pending: PendingFrames) -> bool:
    return all(job.done() for jobs in pending.jobs for job in jobs)
