"""An ONNX Runtime session with the choices a deployment needs made explicit.

Execution providers are taken in the order TensorRT, CUDA, CPU among those installed (or as
given); input/output names and shapes are read from the graph; a model exported with a fixed
batch of 1 is run frame by frame when given a larger batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perception.errors import PerceptionError

try:
    import onnxruntime as ort
except ImportError as error:  # neither onnxruntime nor onnxruntime-gpu is installed
    raise PerceptionError(
        "ONNX Runtime is not installed: pip install 'perception[cpu]' (or '[gpu]' for "
        "onnxruntime-gpu; never both, they overwrite each other)") from error

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                       "CPUExecutionProvider")


class ModelLoadError(PerceptionError):
    """The ONNX file is missing, corrupt or not a model ONNX Runtime can run."""


def choose_providers(requested: list[str] | None = None) -> list[str]:
    available = ort.get_available_providers()
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise PerceptionError(f"execution provider(s) {', '.join(missing)} not available; "
                                  f"installed: {', '.join(available)}")
        return list(requested)
    return [p for p in PREFERRED_PROVIDERS if p in available]


class OnnxModel:
    """One ONNX Runtime session; `run` may be called from several threads at once."""

    def __init__(self, path: Path, providers: list[str] | None = None, threads: int = 0,
                 warmup: bool = True, optimize: bool = True) -> None:
        if not Path(path).is_file():
            raise ModelLoadError(f"{path}: no such model file")
        options = ort.SessionOptions()
        options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                            else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        options.intra_op_num_threads = threads  # 0: ONNX Runtime's default (all cores)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=choose_providers(providers))
        except Exception as error:  # ORT raises several types for unreadable graphs
            raise ModelLoadError(f"{path}: cannot load ONNX model ({str(error).strip()[:200]})") \
                from error
        model_input = self.session.get_inputs()[0]
        self.input_name: str = model_input.name
        self.input_shape: list = list(model_input.shape)
        self.output_names: list[str] = [o.name for o in self.session.get_outputs()]
        self.fixed_batch = self.input_shape[0] if isinstance(self.input_shape[0], int) else None
        self.providers: list[str] = self.session.get_providers()
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        if warmup:
            self.warm_up()

    def warm_up(self, runs: int = 2) -> None:
        shape = [d if isinstance(d, int) else 1 for d in self.input_shape]
        dummy = np.zeros(shape, np.float32)
        for _ in range(runs):
            self.run(dummy)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Outputs for an NCHW batch, in graph order, each with the batch as first axis."""
        if self.fixed_batch == 1 and batch.shape[0] > 1:
            per_frame = [self.session.run(None, {self.input_name: batch[i:i + 1]})
                         for i in range(batch.shape[0])]
            return [np.concatenate(parts) for parts in zip(*per_frame, strict=True)]
        return self.session.run(None, {self.input_name: batch})
