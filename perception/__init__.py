"""Camera perception for driving, from a camera frame to a steering command. Imports no torch.

The core chain, one module per stage: frames -> preprocess -> inference -> decode (and
multitask_decode) -> results -> pipeline (the `Perceiver`). The rooms: zoo/ (which models,
their files), driving/ (camera -> bev -> planning -> control), logs/ (drive logs and output
files), commands/ (the subcommands), wired by cli.py. docs/architecture.md has the map.
"""

__version__ = "0.1.0"
