"""The road-user classes our network predicts, in output order (no torch needed to read them)."""

CLASSES = ("person", "bicycle", "car", "motorcycle", "bus", "truck", "traffic light",
           "stop sign")
