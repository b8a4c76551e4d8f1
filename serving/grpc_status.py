"""The gRPC status for a service error, shared by both gRPC services (ours and the v2 one).

Bad input (413 included) INVALID_ARGUMENT, an unknown model NOT_FOUND, queue or pixel budget
full RESOURCE_EXHAUSTED, not ready or shutting down UNAVAILABLE, too slow DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import grpc

from serving.service import Overloaded, RequestError

INTERNAL_ERROR = "internal server error (see the server log)"
CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
         413: grpc.StatusCode.INVALID_ARGUMENT, 503: grpc.StatusCode.UNAVAILABLE,
         504: grpc.StatusCode.DEADLINE_EXCEEDED}


def status_code(error: RequestError) -> grpc.StatusCode:
    if isinstance(error, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return CODES.get(error.status, grpc.StatusCode.INVALID_ARGUMENT)
