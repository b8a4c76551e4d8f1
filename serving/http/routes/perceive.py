"""`POST /v1/perceive`: one JPEG or PNG (raw body or multipart field `image`) -> its result."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from serving.http.answer import answer_image
from serving.http.dependencies import PerceiveQuery, ServiceDep, perceive_query
from serving.http.fast_json import FastJSONResponse
from serving.http.schemas import IMAGE_BODY, RESPONSE_EXAMPLE, PerceiveResponse, errors
from serving.service import RequestError

router = APIRouter()


@router.post(
    "/v1/perceive", summary="Perceive one image",
    openapi_extra=IMAGE_BODY,
    responses={200: {"model": PerceiveResponse,
                     "content": {"application/json": {"example": RESPONSE_EXAMPLE}}},
               **errors(400, 401, 408, 413, 415, 422, 431, 503, 504)},
)
async def perceive(request: Request, query: Annotated[PerceiveQuery, Depends(perceive_query)],
                   service: ServiceDep) -> FastJSONResponse:
    data = await read_image(request, query.content_type)
    body, _ = await answer_image(service, data, "http", query.options)
    return FastJSONResponse(body)


async def read_image(request: Request, content_type: str) -> bytes:
    """The image's bytes: the body, or the multipart field `image`."""
    if content_type != "multipart/form-data":
        return await request.body()
    form = await request.form(max_files=1, max_fields=8)
    try:
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise RequestError(400, "multipart body has no file field 'image'")
        return await upload.read()
    finally:
        await form.close()
