"""What keeps any client from starving the gRPC server: call caps, idle streams, raw payloads.

- Concurrent calls: at most `grpc_max_calls` at once, of which at most `grpc_max_streams`
  streaming (StreamPerceive, reflection); past either cap a call is refused at once with
  RESOURCE_EXHAUSTED. The health service never counts: the thread pool has
  `RESERVED_THREADS` workers more than calls may hold, so a `Check` always finds one, and
  `Watch` is served without holding a thread (grpcio-health-checking's non-blocking mode).
- Idle streams: a stream with no message either way for `grpc_stream_idle_s` is cancelled
  (the client sees CANCELLED) and its place is free again.
- Raw payloads that are not the method's protobuf: gRPC itself answers INTERNAL ("Exception
  deserializing request!"); here the request arrives as a `NotAMessage`, which Perception's
  handlers answer as a bad request (a stream answers that message with an error and goes on)
  and other services' calls refuse with INVALID_ARGUMENT.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc

log = logging.getLogger("perception.serving")

RESERVED_THREADS = 8
EXEMPT_PREFIX = "/grpc.health.v1.Health/"
_MAKE_HANDLER = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}
_BEHAVIOUR = {(False, False): "unary_unary", (False, True): "unary_stream",
              (True, False): "stream_unary", (True, True): "stream_stream"}


class NotAMessage:
    """Stands for a request payload that did not parse as the method's protobuf message."""

    def __init__(self, method: str) -> None:
        self.error = f"the request to {method} is not a valid protobuf message of its type"


def behaviour(handler: grpc.RpcMethodHandler) -> Callable:
    return getattr(handler, _BEHAVIOUR[(handler.request_streaming, handler.response_streaming)])


def rebuilt(handler: grpc.RpcMethodHandler, new_behaviour: Callable,
            deserializer: Callable[[bytes], Any] | None) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler`, with another behaviour and deserializer."""
    make = _MAKE_HANDLER[(handler.request_streaming, handler.response_streaming)]
    return make(new_behaviour, request_deserializer=deserializer,
                response_serializer=handler.response_serializer)


def lenient(deserializer: Callable[[bytes], Any], method: str) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:
            return NotAMessage(method)

    return parse


class CallLimits(grpc.ServerInterceptor):
    """Caps concurrent calls and streams, cancels idle streams, parses requests leniently.

    `own_prefix` names the service whose handlers deal with `NotAMessage` themselves."""

    def __init__(self, max_calls: int, max_streams: int, stream_idle_s: float,
                 own_prefix: str) -> None:
        self.max_calls = max_calls
        self.max_streams = max_streams
        self.own_prefix = own_prefix
        self.calls = 0
        self.streams = 0
        self._lock = threading.Lock()
        self.idle = IdleStreams(stream_idle_s)

    def intercept_service(self, continuation, details):  # noqa: ANN001, ANN201 (gRPC's API)
        handler = continuation(details)
        if handler is None or details.method.startswith(EXEMPT_PREFIX):
            return handler
        return self._guarded(handler, details.method)

    def _guarded(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        inner = behaviour(handler)
        streaming = handler.request_streaming or handler.response_streaming
        own = method.startswith(self.own_prefix)

        def argument(value: Any, context: grpc.ServicerContext, activity: Callable[[], None]
                     ) -> Any:
            if handler.request_streaming:
                return _checked_requests(value, context, own, activity)
            if isinstance(value, NotAMessage) and not own:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, value.error)
            return value

        def call(value: Any, context: grpc.ServicerContext) -> Any:
            with self._slot(context, streaming), self.idle.watching(context, streaming) as touch:
                return inner(argument(value, context, touch), context)

        def stream(value: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with self._slot(context, streaming), self.idle.watching(context, streaming) as touch:
                for response in inner(argument(value, context, touch), context):
                    touch()
                    yield response

        deserializer = (lenient(handler.request_deserializer, method)
                        if handler.request_deserializer else None)
        return rebuilt(handler, stream if handler.response_streaming else call, deserializer)

    @contextmanager
    def _slot(self, context: grpc.ServicerContext, streaming: bool) -> Iterator[None]:
        with self._lock:
            if self.calls >= self.max_calls:
                refusal = (f"too many concurrent gRPC calls (limit {self.max_calls}, "
                           "--grpc-max-calls); retry shortly")
            elif streaming and self.streams >= self.max_streams:
                refusal = (f"too many concurrent gRPC streams (limit {self.max_streams}, "
                           "--grpc-max-streams); retry shortly")
            else:
                refusal = ""
                self.calls += 1
                self.streams += streaming
        if refusal:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
        try:
            yield
        finally:
            with self._lock:
                self.calls -= 1
                self.streams -= streaming


def _checked_requests(requests: Iterator[Any], context: grpc.ServicerContext, own: bool,
                      activity: Callable[[], None]) -> Iterator[Any]:
    for request in requests:
        activity()
        if isinstance(request, NotAMessage) and not own:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.error)
        yield request


class IdleStreams:
    """Cancels streams with no message either way for `idle_s` seconds (one watcher thread)."""

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self._last: dict[grpc.ServicerContext, float] = {}
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    @contextmanager
    def watching(self, context: grpc.ServicerContext, streaming: bool
                 ) -> Iterator[Callable[[], None]]:
        """Watch a streaming call while it runs; yields the function that records activity."""
        if not streaming:
            yield lambda: None
            return

        def touch() -> None:
            with self._lock:
                if context in self._last:
                    self._last[context] = time.monotonic()

        with self._lock:
            self._last[context] = time.monotonic()
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, name="grpc-idle-streams",
                                                 daemon=True)
                self._watcher.start()
        try:
            yield touch
        finally:
            with self._lock:
                self._last.pop(context, None)

    def _watch(self) -> None:
        while True:
            time.sleep(min(1.0, self.idle_s / 4))
            now = time.monotonic()
            with self._lock:
                idle = [context for context, last in self._last.items()
                        if now - last > self.idle_s]
                for context in idle:
                    del self._last[context]
            for context in idle:
                log.info("gRPC stream from %s idle for %g s: cancelled", context.peer(),
                         self.idle_s)
                context.cancel()
