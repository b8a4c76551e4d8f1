"""`GET /v1/models`: the loaded models, their classes and input sizes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from serving.http.dependencies import ServiceDep
from serving.http.schemas import ModelsResponse, errors

router = APIRouter()


@router.get("/v1/models", response_model=ModelsResponse, summary="The loaded models",
            responses=errors(401, 503))
async def models(service: ServiceDep) -> dict[str, Any]:
    service.check_ready()
    return {"models": [{"name": spec.name, "task": spec.task, "classes": list(spec.classes),
                        "input": {"width": spec.input.width, "height": spec.input.height,
                                  "resize": spec.input.resize, "color": spec.input.color}}
                       for spec in service.model_specs()]}
