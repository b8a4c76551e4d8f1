"""API keys, for every transport: which key a request presents, and whether it is one of ours.

HTTP and the WebSocket read the request headers, gRPC the call metadata; both send
`Authorization: Bearer KEY` or `x-api-key: KEY` (the WebSocket may also use `?api_key=KEY`,
since browsers cannot set its headers). Keys are compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key in `Authorization: Bearer KEY`, else in `x-api-key` (names in lower case)."""
    auth = str(headers.get("authorization", ""))
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return headers.get("x-api-key")


def key_ok(presented: str | None, keys: tuple[str, ...]) -> bool:
    """Constant-time comparison against every configured key."""
    if not presented:
        return False
    given = presented.encode()
    return any([hmac.compare_digest(given, key.encode()) for key in keys])
