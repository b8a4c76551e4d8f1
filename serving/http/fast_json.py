"""JSON answers written by orjson: a perceive answer (a few KB of numbers and base64) encodes
in ~2 µs instead of ~70 µs with the standard library's encoder. NaN and infinities become
`null` (the standard encoder would fail the answer with a 500)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


def dumps(content: Any) -> bytes:
    return orjson.dumps(content)


class FastJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return dumps(content)
