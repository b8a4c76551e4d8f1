"""`/healthz` (the process is up) and `/readyz` (the models are loaded and warm); no key."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from serving.http.dependencies import ServiceDep

router = APIRouter()


@router.get("/healthz", summary="The process is alive",
            responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}})
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Models loaded and warmed up", responses={
    200: {"content": {"application/json": {"example": {"status": "ready"}}}},
    503: {"content": {"application/json": {"example": {"status": "loading"}}}}})
async def readyz(service: ServiceDep) -> JSONResponse:
    if service.ready:
        return JSONResponse({"status": "ready"})
    if service.load_error:
        return JSONResponse({"status": "failed", "error": service.load_error}, 503)
    return JSONResponse({"status": "loading"}, 503)
