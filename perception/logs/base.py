"""What every log reader shares: the part-way error and the choice of an image topic."""

from __future__ import annotations

from pathlib import Path

from perception.frames import SourceError
from perception.logs.messages import IMAGE_TYPES

EXIT_PARTIAL = 3  # the exit code of a command whose log broke part-way (its frames before stand)


def choose_topic(log: Path, images: dict[str, str], others: dict[str, str],
                 topic: str | None) -> str:
    """The image topic to read: the one asked for, or the only one; else say which exist.

    `images` and `others` map topic -> message type.
    """
    listing = ", ".join(f"{name} ({kind})" for name, kind in sorted(images.items()))
    if topic is not None:
        if topic in images:
            return topic
        where = f"{topic} is not an image topic ({others[topic]})" if topic in others else \
            f"no topic {topic}"
        raise SourceError(f"{log}: {where}; image topics: {listing or 'none'}")
    if not images:
        kinds = ", ".join(f"{name} ({kind})" for name, kind in sorted(others.items()))
        raise SourceError(f"{log}: no image topic (expected one of {', '.join(sorted(IMAGE_TYPES))}"
                          f"); topics: {kinds or 'none'}")
    if len(images) > 1:
        raise SourceError(f"{log}: several image topics, pick one with --topic: {listing}")
    return next(iter(images))


def calibration_topic(image_topic: str, calibration_topics: list[str]) -> str | None:
    """The calibration of this camera: the one in the image topic's namespace
    (/front/image_raw -> /front/camera_info), else the only one there is."""
    namespace = image_topic.rsplit("/", 1)[0]
    same = [t for t in calibration_topics if t.rsplit("/", 1)[0] == namespace]
    if len(same) == 1:
        return same[0]
    return calibration_topics[0] if len(calibration_topics) == 1 else None
