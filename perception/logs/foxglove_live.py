"""The Foxglove topics, live: a WebSocket server speaking the Foxglove protocol (the
`foxglove-sdk` package) that publishes what foxglove_writer.py writes to MCAP, with the same
topics and schemas, for the Foxglove app's "Open connection" (ws://127.0.0.1:8765).

A slow viewer never slows perception: `publish` hands the newest (frame, result) to the
publisher's own thread and returns at once (a frame still waiting when the next one comes is
dropped, for the viewer only); that thread builds the messages only while a client subscribes
to at least one topic, at a lower priority (on Linux, nice `VIEWER_NICENESS`), so that busy
cores go to perception and the viewer gets fewer frames; and the SDK queues at most `BACKLOG`
messages per client, dropping the oldest for a client that does not read.

The topics of a frame are advertised when the server starts, so a client learns of them all at
once when it connects (a channel the SDK advertises to a connected client can refuse a
subscription sent at once: a race in foxglove-sdk 0.30); topics of one's own are advertised by
their first message.

With a `Playback` (playback.py) the server offers playback control: the app's play, pause,
speed and seek drive the replay, and the app's timeline spans the log.

`perception replay --foxglove` uses it; the service and the simulator can take it up the same
way, with a few lines:

    with foxglove_live(port=8765, camera=camera) as live:  # a busy port: FoxgloveServerError
        ...
        live.publish(frame, result)  # never blocks
        live.write_json("/sim/state", log_time_ns(frame.timestamp), state)  # a topic of one's own
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import foxglove
from foxglove import Channel, Context, Schema
from foxglove.websocket import (
    Capability,
    PlaybackCommand,
    PlaybackControlRequest,
    PlaybackStatus,
    ServerListener,
)
from foxglove.websocket import PlaybackState as SdkPlaybackState
from mcap_protobuf.schema import build_file_descriptor_set

from perception.driving.camera import CameraModel
from perception.errors import PerceptionError
from perception.frames import Frame
from perception.logs.foxglove_writer import (
    ANY_JSON,
    PROTOBUF_TOPICS,
    RESULT_SCHEMA,
    RESULT_SCHEMA_NAME,
    RESULT_TOPIC,
    write_frame,
)
from perception.logs.mount import CameraMount, log_time_ns
from perception.logs.playback import Playback, PlaybackState
from perception.newest_frame import NewestFrame
from perception.results import FrameResult

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765  # the Foxglove app's default
BACKLOG = 256  # messages queued per client (about 30 frames), the oldest dropped beyond
STOP_WAIT_S = 2.0
VIEWER_NICENESS = 10  # the publisher's thread: busy cores go to perception, not the viewer


@dataclass(frozen=True)
class FoxgloveAddress:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0: any free port


class FoxgloveServerError(PerceptionError):
    """The server cannot listen where asked (a busy or privileged port, a foreign address)."""


class FoxgloveLive:
    """Publishes frames and results on a running server; `close()` stops it."""

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 mount: CameraMount | None = None, playback: Playback | None = None,
                 name: str = "perception") -> None:
        """Starts the server now (FoxgloveServerError if it cannot listen); `port` 0 takes a
        free one (see `port`)."""
        self.mount = mount or CameraMount()
        self.published = 0  # frames published (built and sent)
        self._context = Context()
        self._channels: dict[str, Channel] = {}
        self._channels_lock = threading.Lock()
        for topic, message_type in PROTOBUF_TOPICS.items():
            self._protobuf_channel(topic, message_type)
        self._json_channel(RESULT_TOPIC, RESULT_SCHEMA_NAME, RESULT_SCHEMA)
        options: dict[str, Any] = {}
        if playback is not None:
            timeline = playback.timeline
            options = {"playback_time_range": (timeline.start_ns, timeline.end_ns),
                       "server_listener": PlaybackListener(playback)}
        try:
            self.server = foxglove.start_server(name=name, host=host, port=port,
                                                context=self._context,
                                                capabilities=[Capability.Time],
                                                message_backlog_size=BACKLOG, **options)
        except RuntimeError as error:  # FoxgloveError: Failed to bind port: <the OS's reason>
            reason = str(error).rsplit(": ", 1)[-1]
            if "ermission denied" in reason and 0 < port < 1024:
                reason += "; ports below 1024 need privileges"
            raise FoxgloveServerError(f"cannot serve Foxglove on {host}:{port}: {reason}"
                                      ) from None
        self.host = host
        if playback is not None:
            playback.on_change = self._broadcast_state
        self._newest: NewestFrame[tuple[Frame, FrameResult | None]] = NewestFrame()
        self._thread = threading.Thread(target=self._run, name="foxglove-live", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def dropped(self) -> int:
        """Frames replaced before the publisher took them (dropped for the viewer)."""
        return self._newest.dropped

    def publish(self, frame: Frame, result: FrameResult | None = None) -> None:
        """The frame's topics (as FoxgloveWriter.write), soon, on the publisher's thread;
        never blocks."""
        self._newest.put((frame, result))

    def write_protobuf(self, topic: str, log_time: int, message: Any) -> None:
        """A protobuf message (a Foxglove schema) on `topic` at `log_time` ns, now, if a client
        subscribes to it."""
        channel = self._protobuf_channel(topic, type(message))
        if channel.has_sinks():
            channel.log(message.SerializeToString(), log_time=log_time)

    def write_json(self, topic: str, log_time: int, payload: Any, schema_name: str | None = None,
                   schema: str = ANY_JSON) -> None:
        """A JSON value on `topic` at `log_time` ns, as FoxgloveWriter.write_json."""
        channel = self._json_channel(topic, schema_name or topic.strip("/").replace("/", "."),
                                     schema)
        if channel.has_sinks():
            channel.log(json.dumps(payload, separators=(",", ":")).encode(), log_time=log_time)

    def close(self) -> None:
        """Publish what is waiting, then stop the server, waiting at most `STOP_WAIT_S`: the
        SDK's stop waits for every client to take a graceful close, forever for a client that
        stopped reading (its socket full); that wait goes on, on a daemon thread, which does
        not hold up the process's exit."""
        self._newest.end()
        self._thread.join(timeout=STOP_WAIT_S)
        stop = threading.Thread(target=self.server.stop, name="foxglove-stop", daemon=True)
        stop.start()
        stop.join(timeout=STOP_WAIT_S)

    def _run(self) -> None:
        if sys.platform == "linux":  # where a thread has its own nice value
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), VIEWER_NICENESS)
        while (taken := self._newest.take()) is not None:
            frame, result = taken.item
            if self._watched():
                write_frame(self, self.mount, frame, result)
                self.published += 1
            self.server.broadcast_time(max(0, log_time_ns(frame.timestamp)))

    def _watched(self) -> bool:
        """Whether a client subscribes to any topic."""
        with self._channels_lock:
            channels = list(self._channels.values())
        return any(channel.has_sinks() for channel in channels)

    def _protobuf_channel(self, topic: str, message_type: Any) -> Channel:
        return self._channel(topic, "protobuf", lambda: Schema(
            name=message_type.DESCRIPTOR.full_name, encoding="protobuf",
            data=build_file_descriptor_set(message_type).SerializeToString()))

    def _json_channel(self, topic: str, schema_name: str, schema: str) -> Channel:
        return self._channel(topic, "json", lambda: Schema(name=schema_name,
                                                           encoding="jsonschema",
                                                           data=schema.encode()))

    def _channel(self, topic: str, encoding: str, schema: Callable[[], Schema]) -> Channel:
        """The topic's channel, made (and advertised) the first time."""
        with self._channels_lock:
            if topic not in self._channels:
                self._channels[topic] = Channel(topic, schema=schema(),
                                                message_encoding=encoding,
                                                context=self._context)
            return self._channels[topic]

    def _broadcast_state(self, state: PlaybackState) -> None:
        self.server.broadcast_playback_state(sdk_state(state, None))


class PlaybackListener(ServerListener):
    """The app's playback controls, handed to a `Playback`."""

    def __init__(self, playback: Playback) -> None:
        self.playback = playback

    def on_playback_control_request(self, request: PlaybackControlRequest
                                    ) -> SdkPlaybackState | None:
        state = self.playback.control(request.playback_command == PlaybackCommand.Play,
                                      request.playback_speed, request.seek_time)
        return sdk_state(state, request.request_id)


def sdk_state(state: PlaybackState, request_id: str | None) -> SdkPlaybackState:
    status = PlaybackStatus.Ended if state.ended else \
        PlaybackStatus.Playing if state.playing else PlaybackStatus.Paused
    return SdkPlaybackState(status=status, current_time=max(0, state.time_ns),
                            playback_speed=state.speed or 1.0, did_seek=state.seeked,
                            request_id=request_id)


@contextmanager
def foxglove_live(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                  camera: CameraModel | None = None, playback: Playback | None = None
                  ) -> Iterator[FoxgloveLive]:
    """A running server for the block (FoxgloveServerError now if it cannot listen); its
    address goes to stderr. `camera` gives the mount for /tf and the calibration for frames
    without one."""
    live = FoxgloveLive(host, port, CameraMount.of(camera), playback)
    print(f"perception: Foxglove live on {live.url} (Foxglove: Open connection)",
          file=sys.stderr, flush=True)
    try:
        yield live
    finally:
        live.close()
