"""Checkpoint -> ONNX (fp32, fp16, INT8) that the runtime loads with no side file.

    perception export --checkpoint runs/lite/last.pt \
        --out perception/zoo/embedded/multitask_lite.onnx --fp16 --int8 --torch \
        --calibration data/distilled

The graph is `models.net.Deployed` (sigmoids and box decoding inside) with a dynamic batch axis,
opset 17. Its `ModelSpec` (classes, input convention, thresholds) is stored as JSON in the
ONNX metadata key `perception.spec`, which the zoo's `resolve("file.onnx")` reads back.
`--fp16` writes `<out stem>.fp16.onnx` (fp16 weights and activations, fp32 inputs and
outputs); `--int8` writes `<out stem>.int8.onnx`, statically quantized by ONNX Runtime (QDQ,
per-channel int8 weights, uint8 activations; the box and mask decoding at the end stays float)
with real frames for calibration; `--torch` writes `<out stem>.pt`, the weights alone. Every
file is written under a temporary name and moved into place only once complete and checked.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import torch

from models.checkpoint import build_net, load_checkpoint, save_checkpoint
from models.data import DataError, distilled_index
from models.net import Deployed, MultiTaskNet
from models.spec import DEFAULT_SCORE_THRESHOLD, metadata_props, model_spec
from perception.errors import PerceptionError
from perception.frames import IMAGE_SUFFIXES, read_image
from perception.logs.files import atomic_output, make_folder, writable
from perception.modelspec import ModelSpec
from perception.preprocess import preprocess

OPSET = 17


def export_onnx(net: MultiTaskNet, path: Path, spec: ModelSpec) -> None:
    deployed = Deployed(net).eval()
    example = torch.rand(1, 3, net.config.height, net.config.width)
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
        raw = Path(scratch) / "raw.onnx"
        torch.onnx.export(deployed, (example,), str(raw), input_names=["images"],
                          output_names=list(Deployed.output_names), opset_version=OPSET,
                          dynamic_axes={name: {0: "batch"} for name in
                                        ("images", *Deployed.output_names)},
                          dynamo=False)
        model = onnx.load(str(raw))
        onnx.checker.check_model(model)
        onnx.helper.set_model_props(model, metadata_props(spec))
        write_model(model, path)


def write_model(model: onnx.ModelProto, path: Path) -> None:
    with atomic_output(path) as temp:
        onnx.save(model, str(temp))


def to_fp16(source: Path, path: Path, spec: ModelSpec) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.helper.set_model_props(model, metadata_props(spec))
    write_model(model, path)


class CalibrationFrames:
    """ONNX Runtime's CalibrationDataReader over real frames, preprocessed like the runtime."""

    def __init__(self, files: list[Path], spec: ModelSpec) -> None:
        self.files, self.spec = iter(files), spec

    def get_next(self) -> dict[str, np.ndarray] | None:
        file = next(self.files, None)
        if file is None:
            return None
        batch, _ = preprocess([read_image(file)], self.spec.input)
        return {"images": batch}


def calibration_files(folder: Path, count: int) -> list[Path]:
    """`count` frames spread over a folder; of a distilled folder, its training split only."""
    if (folder / "index.json").is_file():
        files = [folder / f["image"] for f in distilled_index(folder) if f["split"] == "train"]
    else:
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) \
            if folder.is_dir() else []
    if not files:
        raise DataError(f"{folder}: no calibration images found (INT8 needs real frames)")
    step = max(1, len(files) // count)
    return files[::step][:count]


def float_tail(model: onnx.ModelProto) -> list[str]:
    """Nodes that stay float in INT8: the decoding outside `Deployed.net` (box arithmetic in
    pixels, sigmoids) and the network layers that feed it (its raw outputs)."""
    outside = [n for n in model.graph.node if not n.name.startswith("/net/")]
    consumed = {name for node in outside for name in node.input}
    return [n.name for n in outside] + [n.name for n in model.graph.node
                                        if n.name.startswith("/net/") and
                                        consumed.intersection(n.output)]


def to_int8(source: Path, path: Path, spec: ModelSpec, frames: list[Path]) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantized = Path(scratch) / "int8.onnx"
        quantize_static(str(prepared), str(quantized), CalibrationFrames(frames, spec),
                        quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["Conv", "Add", "Relu", "Resize"],
                        nodes_to_exclude=float_tail(onnx.load(str(prepared))),
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
        model = onnx.load(str(quantized))
        onnx.helper.set_model_props(model, metadata_props(spec))
        write_model(model, path)


def parity(net: MultiTaskNet, path: Path, batch: int = 2, seed: int = 0) -> float:
    """Largest absolute difference PyTorch vs ONNX Runtime over all outputs of a random batch."""
    import onnxruntime as ort

    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, net.config.height, net.config.width, generator=generator)
    with torch.no_grad():
        expected = [t.numpy() for t in Deployed(net).eval()(images)]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    found = session.run(None, {"images": images.numpy()})
    return max(float(np.abs(e - f).max()) for e, f in zip(expected, found, strict=True))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="a checkpoint written by `perception train` (last.pt)")
    parser.add_argument("--out", type=Path, required=True, help="the fp32 .onnx to write")
    parser.add_argument("--weights", choices=("ema", "model"), default="ema")
    parser.add_argument("--fp16", action="store_true", help="also write <stem>.fp16.onnx")
    parser.add_argument("--int8", action="store_true", help="also write <stem>.int8.onnx")
    parser.add_argument("--calibration", type=Path,
                        help="folder of real frames for INT8 calibration")
    parser.add_argument("--calibration-frames", type=int, default=64)
    parser.add_argument("--torch", action="store_true",
                        help="also write <stem>.pt: the weights alone, for models.torch_runtime")
    parser.add_argument("--licence", default="", help="licence line stored in the metadata")
    parser.add_argument("--score-threshold", type=float, default=DEFAULT_SCORE_THRESHOLD,
                        help="the boxes' score threshold users get, stored in the spec; "
                             "choose it on a validation split (models/evaluate.py)")


def main(args: argparse.Namespace) -> int:
    if not 0 < args.score_threshold < 1:
        raise PerceptionError(f"--score-threshold {args.score_threshold}: must be in (0, 1)")
    if args.calibration_frames < 1:
        raise PerceptionError("--calibration-frames must be at least 1")
    if args.int8 and args.calibration is None:
        raise PerceptionError("--int8 needs --calibration FOLDER (real frames)")
    if args.out.suffix != ".onnx":
        raise PerceptionError(f"{args.out}: the output must end in .onnx")
    if args.torch and args.out.with_suffix(".pt").resolve() == args.checkpoint.resolve():
        raise PerceptionError(f"--torch would write {args.out.with_suffix('.pt')} over the "
                              "checkpoint it reads; choose another --out")
    writable(make_folder(args.out.parent) / args.out.name)  # before any work: exit 2, not 1
    state = load_checkpoint(args.checkpoint)
    if args.weights not in state:
        raise PerceptionError(f"{args.checkpoint}: holds no {args.weights!r} weights; nothing "
                              "was exported")
    net = build_net(state, args.weights)
    frames = calibration_files(args.calibration, args.calibration_frames) if args.int8 else []
    spec = model_spec(net, args.out.name, args.licence, score_threshold=args.score_threshold)
    export_onnx(net, args.out, spec)
    print(f"{args.out}: fp32, max |torch - onnxruntime| = {parity(net, args.out):.2e}")
    if args.fp16:
        fp16 = args.out.with_suffix(".fp16.onnx")
        to_fp16(args.out, fp16, replace(spec, file=fp16.name))
        print(f"{fp16}: fp16 weights, fp32 inputs/outputs")
    if args.torch:
        weights = args.out.with_suffix(".pt")
        save_checkpoint(weights, {key: state[key] for key in ("architecture", "config", "step")}
                        | {"ema": net.state_dict(), "score_threshold": args.score_threshold})
        print(f"{weights}: weights for the PyTorch path")
    if args.int8:
        int8 = args.out.with_suffix(".int8.onnx")
        to_int8(args.out, int8, replace(spec, file=int8.name), frames)
        print(f"{int8}: INT8 (QDQ), calibrated on {len(frames)} frames of {args.calibration}")
    return 0


if __name__ == "__main__":
    import sys

    from models.command import standalone

    sys.exit(standalone("export", add_arguments, main, __doc__))
