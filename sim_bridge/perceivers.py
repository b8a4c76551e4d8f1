"""Our models as a simulator car's perception, checked before anything loads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from perception.driving.planning import check_plannable
from perception.zoo.registry import resolve

if TYPE_CHECKING:
    from perception.pipeline import Perceiver


def planning_perceiver(names: list[str]) -> tuple[Perceiver, bool]:
    """Our models by zoo name, and whether one of them detects road users; a set that cannot
    be planned on (no segmentation model) is refused before any model loads."""
    from perception.pipeline import Perceiver  # ONNX Runtime: loaded only when models run

    models = [resolve(name) for name in names]
    detects = check_plannable([spec for spec, _ in models])
    return Perceiver(models), detects
