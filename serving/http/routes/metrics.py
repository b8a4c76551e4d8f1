"""`GET /metrics`: the Prometheus text of the server's own registry (serving/metrics.py)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from serving.http.dependencies import ServiceDep
from serving.http.schemas import errors

router = APIRouter()


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}, **errors(401)})
async def metrics(service: ServiceDep) -> Response:
    service.metrics.queue_depth.set(service.batcher.depth if service.batcher else 0)
    body, content_type = service.metrics.exposition()
    return Response(body, media_type=content_type)
