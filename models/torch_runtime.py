"""Our network on PyTorch: CPU fp32, or CUDA with fp16, channels-last and CUDA graphs.

For GPU users without onnxruntime-gpu. `TorchModel` has the interface of
`perception.inference.OnnxModel` (`run(batch) -> list of arrays`, `output_names`, `metadata`),
so the runtime's preprocess -> run -> `decode_multitask` chain is the same for both paths; the
runtime imports this module inside a function, only for a `.pt` model, so torch is loaded only
then.

Why CUDA graphs: the network is ~100 small kernels, so at batch 1 the GPU waits on Python's
kernel launches; replaying a captured graph issues them all at once. A graph is captured per
batch size on first use (fixed shapes, fixed buffers).

    python -m models.torch_runtime --weights perception/zoo/embedded/multitask_lite.pt --batch 1 8
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import build_net, load_checkpoint, pick_device
from models.net import Deployed
from models.spec import DEFAULT_SCORE_THRESHOLD, metadata_props, model_spec


class TorchModel:
    def __init__(self, weights: Path, device: str = "auto", half: bool | None = None,
                 cuda_graphs: bool = True, channels_last: bool = True) -> None:
        self.path = Path(weights)
        state = load_checkpoint(self.path)
        net = build_net(state)
        self.spec = model_spec(net, self.path.name, score_threshold=state.get(
            "score_threshold", DEFAULT_SCORE_THRESHOLD))
        self.metadata = metadata_props(self.spec)
        self.output_names = list(Deployed.output_names)
        self.fixed_batch: int | None = None  # any batch size (one CUDA graph per size seen)
        self.device = pick_device(device)
        cuda = self.device.type == "cuda"
        self.half = cuda if half is None else half
        self.dtype = torch.float16 if self.half else torch.float32
        self.memory_format = torch.channels_last if channels_last and cuda else \
            torch.contiguous_format
        self.module = Deployed(net).to(self.device, self.dtype).eval()
        self.module = self.module.to(memory_format=self.memory_format)
        self.use_graphs = cuda_graphs and cuda
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple]] = {}
        self.providers = [f"torch:{self.device}{':fp16' if self.half else ''}"]

    def _graph(self, batch: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple]:
        if batch not in self.graphs:
            shape = (batch, 3, self.spec.input.height, self.spec.input.width)
            static = torch.zeros(shape, device=self.device, dtype=self.dtype)
            static = static.contiguous(memory_format=self.memory_format)
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream), torch.inference_mode():
                for _ in range(3):  # warm-up outside the graph (cuDNN picks its kernels)
                    self.module(static)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode():
                outputs = self.module(static)
            self.graphs[batch] = (graph, static, outputs)
        return self.graphs[batch]

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Device tensors in, device tensors out (the benchmark's view: no host copies)."""
        if self.use_graphs:
            graph, static, outputs = self._graph(images.shape[0])
            static.copy_(images)
            graph.replay()
            return outputs
        images = images.to(self.device, self.dtype).contiguous(memory_format=self.memory_format)
        return self.module(images)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """An NCHW float32 batch (as preprocessed for ONNX) -> float32 outputs, graph order."""
        images = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device)
        return [t.float().cpu().numpy() for t in self.forward(images)]


def benchmark(model: TorchModel, batch: int, seconds: float = 3.0) -> dict[str, float]:
    """Frames/s of the model alone (input already on the device) and of `run` (host copies)."""
    shape = (batch, 3, model.spec.input.height, model.spec.input.width)
    on_device = torch.rand(shape, device=model.device)
    host = np.random.default_rng(0).random(shape, np.float32)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    result = {}
    for name, call in (("model", lambda: model.forward(on_device)),
                       ("end_to_end", lambda: model.run(host))):
        for _ in range(10):
            call()
        sync()
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            call()
            count += 1
        sync()
        elapsed = time.perf_counter() - start
        result[f"{name}_fps"] = count * batch / elapsed
        result[f"{name}_ms_per_batch"] = elapsed / count * 1e3
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", type=Path, required=True,
                        help="a .pt from `perception export --torch` (or a training last.pt)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--fp32", action="store_true", help="no fp16 on CUDA")
    parser.add_argument("--no-graphs", action="store_true")
    parser.add_argument("--seconds", type=float, default=3.0)


def main(args: argparse.Namespace) -> int:
    """Frames/s of our network on PyTorch, per batch size, as JSON lines."""
    model = TorchModel(args.weights, args.device, half=False if args.fp32 else None,
                       cuda_graphs=not args.no_graphs)
    device = torch.cuda.get_device_name() if model.device.type == "cuda" else "cpu"
    for batch in args.batch:
        figures = benchmark(model, batch, args.seconds)
        print(json.dumps({"device": device, "provider": model.providers[0],
                          "graphs": model.use_graphs, "batch": batch,
                          **{k: round(v, 2) for k, v in figures.items()}}))
    return 0


if __name__ == "__main__":
    import sys

    from models.command import standalone

    sys.exit(standalone("torch_runtime", add_arguments, main, __doc__))
