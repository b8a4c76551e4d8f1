"""`GET /`: the web viewer's page (its assets are the app's `/static` mount); no key."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException


def viewer_router(static_dir: Path) -> APIRouter:
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        page = static_dir / "index.html"
        if not page.is_file():
            raise HTTPException(404, "no web page installed (serving/static/index.html)")
        return FileResponse(page)

    return router
