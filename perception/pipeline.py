"""The perceiver: frames in, `FrameResult`s out, with every loaded model run on each batch.

Each model's preprocess -> inference -> decode chain runs in its own thread: ONNX Runtime and
OpenCV release the GIL, so a detector and a segmenter run truly in parallel on two cores.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perception.decode import decode_detections, decode_twinlitenet
from perception.frames import Frame
from perception.inference import OnnxModel
from perception.modelspec import ModelSpec
from perception.preprocess import preprocess
from perception.results import Detection, FrameResult


@dataclass
class ModelOutput:
    """What one model contributed to a batch: detections and/or masks, and stage timings."""

    detections: list[list[Detection]] | None
    drivable: np.ndarray | None
    lanes: np.ndarray | None
    timings_ms: dict[str, float]


class LoadedModel:
    def __init__(self, spec: ModelSpec, path: Path, providers: list[str] | None = None,
                 threads: int = 1) -> None:
        self.spec = spec
        self.onnx = OnnxModel(path, providers=providers, threads=threads)

    def __call__(self, frames: list[Frame]) -> ModelOutput:
        name = self.spec.name
        t0 = time.perf_counter()
        batch, placements = preprocess([f.image for f in frames], self.spec.input)
        t1 = time.perf_counter()
        raw = self.onnx.run(batch)
        t2 = time.perf_counter()
        detections = drivable = lanes = None
        if self.spec.decoder == "twinlitenet":
            outputs = dict(zip(self.onnx.output_names, raw, strict=True))
            drivable, lanes = decode_twinlitenet(outputs["da"], outputs["ll"])
        else:
            sizes = [(f.width, f.height) for f in frames]
            detections = decode_detections(raw, self.spec, placements, sizes)
        t3 = time.perf_counter()
        timings = {f"{name}/preprocess": (t1 - t0) * 1e3, f"{name}/inference": (t2 - t1) * 1e3,
                   f"{name}/decode": (t3 - t2) * 1e3}
        return ModelOutput(detections, drivable, lanes, timings)


class Perceiver:
    """Runs a set of models (typically one detector and one segmenter) on batches of frames."""

    def __init__(self, models: list[tuple[ModelSpec, Path]], providers: list[str] | None = None,
                 threads_per_model: int = 1) -> None:
        self.models = [LoadedModel(spec, path, providers, threads_per_model)
                       for spec, path in models]
        self.model_names = [m.spec.name for m in self.models]
        self.pool = ThreadPoolExecutor(max_workers=max(1, len(self.models)),
                                       thread_name_prefix="model")

    @classmethod
    def from_names(cls, names: list[str], **options) -> Perceiver:
        from models.zoo import resolve  # the zoo is torch-free data + downloads

        return cls([resolve(name) for name in names], **options)

    def perceive(self, frames: list[Frame]) -> list[FrameResult]:
        if not frames:
            return []
        start = time.perf_counter()
        outputs = list(self.pool.map(lambda model: model(frames), self.models))
        total_ms = (time.perf_counter() - start) * 1e3
        results = []
        for i, frame in enumerate(frames):
            result = FrameResult(frame_index=frame.index, source=frame.source,
                                 timestamp=frame.timestamp, width=frame.width,
                                 height=frame.height, models=self.model_names)
            for output in outputs:
                if output.detections is not None:
                    result.detections.extend(output.detections[i])
                if output.drivable is not None:
                    result.drivable, result.lanes = output.drivable[i], output.lanes[i]
                result.timings_ms.update(output.timings_ms)
            result.timings_ms["total"] = total_ms
            results.append(result)
        return results

    def close(self) -> None:
        self.pool.shutdown(wait=True)
