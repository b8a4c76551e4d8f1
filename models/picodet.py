"""PicoDet-S (PaddleDetection, COCO-80), a second detection teacher for distillation.

Not a zoo model (the runtime's decoders do not know its convention); it runs here, in plain
ONNX Runtime, only to label training frames. Convention (../shared/assets/MANIFEST.md 6.8):
RGB, the whole frame stretched to 416x416 (area), `(x / 255 - mean) / std`; outputs 0-3 are
per-level class scores (already sigmoid), 4-7 box distributions (4 sides x 8 bins) for strides
8, 16, 32, 64, rows y-major; distance = softmax-expected bin x stride from the cell centre.
Boxes touching the frame's bottom edge or wider than `MAX_WIDTH` of it are dropped (the
MANIFEST's false positives: the ego hood and stride-64 ghosts).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from models.classes import CLASSES
from perception.decode import ROAD_USERS, nms
from perception.errors import PerceptionError
from perception.zoo.download import sha256_of

SHA256 = "cdab77bdde16e4f76bec734c4e5791801d1739e4c7ec1995e0e110e04300d0c2"  # 416 px, 6.8
SIZE = 416
STRIDES = (8, 16, 32, 64)
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
SCORE_THRESHOLD = 0.4
NMS_IOU = 0.5
MAX_WIDTH = 0.6  # of the frame
OUR_CLASS = {coco: CLASSES.index(name.replace("_", " ")) for coco, name in ROAD_USERS.items()}


def default_path() -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "assets" / "models" / "picodet" / \
        "picodet_s_416_coco.onnx"


class PicoDet:
    """`PicoDet(path)(image)` -> boxes (K, 4) in frame pixels, scores (K,), our class ids."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        if not path.is_file():
            raise PerceptionError(f"{path}: no PicoDet-S model (MANIFEST 6.8)")
        if sha256_of(path) != SHA256:
            raise PerceptionError(f"{path}: not the PicoDet-S 416 file of MANIFEST 6.8 "
                                  f"(sha256 differs from {SHA256[:12]}...)")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # "initializer appears in graph inputs", harmless
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.anchors = np.concatenate([cell_centres(stride) for stride in STRIDES])
        self.strides = np.concatenate([np.full(len(cell_centres(s)), s, np.float32)
                                       for s in STRIDES])

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        height, width = image.shape[:2]
        rgb = cv2.cvtColor(cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA),
                           cv2.COLOR_BGR2RGB)
        batch = ((rgb.astype(np.float32) / 255 - MEAN) / STD).transpose(2, 0, 1)[None]
        outputs = self.session.run(None, {self.input: batch})
        scores = np.concatenate([o[0] for o in outputs[:4]])  # (A, 80)
        bins = np.concatenate([o[0] for o in outputs[4:]]).reshape(-1, 4, 8)
        coco = scores.argmax(1)
        best = scores[np.arange(len(scores)), coco]
        keep = (best >= SCORE_THRESHOLD) & np.isin(coco, list(OUR_CLASS))
        bins, coco, best = bins[keep], coco[keep], best[keep]
        weights = np.exp(bins - bins.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        distances = (weights * np.arange(8, dtype=np.float32)).sum(-1) * self.strides[keep, None]
        centres = self.anchors[keep]
        boxes = np.concatenate((centres - distances[:, :2], centres + distances[:, 2:]), 1)
        boxes = np.clip(boxes * np.array([width, height, width, height], np.float32) / SIZE,
                        0, [width, height, width, height])
        plausible = (boxes[:, 3] < height - 1) & (boxes[:, 2] - boxes[:, 0] <= MAX_WIDTH * width)
        boxes, best, coco = boxes[plausible], best[plausible], coco[plausible]
        chosen = nms(boxes, best, coco, SCORE_THRESHOLD, NMS_IOU)
        classes = np.array([OUR_CLASS[int(c)] for c in coco[chosen]], np.int64)
        return boxes[chosen].astype(np.float32), best[chosen].astype(np.float32), classes


def cell_centres(stride: int) -> np.ndarray:
    """(N, 2) x, y centres in input pixels of a level's cells, y-major."""
    cells = -(-SIZE // stride)
    ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
    return ((np.stack((xs, ys), -1).reshape(-1, 2) + 0.5) * stride).astype(np.float32)
