"""Camera perception runtime: frames -> preprocessing -> ONNX Runtime -> decoding -> results.

Imports no torch. Read in this order: frames, modelspec, preprocess, inference, decode,
results, pipeline; then camera, bev, planning, control for the path from pixels to steering.
"""

__version__ = "0.1.0"
