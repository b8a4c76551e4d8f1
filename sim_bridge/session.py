"""Connecting to CARLA, and leaving the simulator exactly as we found it.

Every way out of a run (the last tick, an error, Ctrl-C) goes through the same two context
managers: `SpawnedActors` brakes the ego car and destroys every actor we spawned, sensors first
(a sensor destroyed after its parent would dangle), and `synchronous_mode` puts back the world
settings that were there before, so the server does not stay frozen in synchronous mode waiting
for ticks that never come. Cleanup errors (a server that died mid-run) are reported on stderr
and never hide the error that ended the run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import carla

from sim_bridge.errors import SimError


def connect(host: str, port: int, timeout_s: float = 10.0, town: str | None = None,
            client_factory: Callable[..., Any] = carla.Client) -> tuple[Any, Any]:
    """A client and its world, on `town` if given; SimError when no server answers in time."""
    try:
        client = client_factory(host, port)  # the real client resolves the host name here
        client.set_timeout(timeout_s)
        server_version = client.get_server_version()
        world = client.get_world()
    except RuntimeError as error:
        raise SimError(f"no CARLA server answered at {host}:{port} within {timeout_s:g} s "
                       f"(is CarlaUE4 running there? check --host and --port): {error}") from None
    client_version = client.get_client_version()
    if server_version != client_version:
        print(f"perception sim: warning: CARLA server {server_version}, client "
              f"{client_version}; versions should match", file=sys.stderr)
    if town:
        world = load_town(client, world, town)
    return client, world


def load_town(client: Any, world: Any, town: str) -> Any:
    """Switch to `town` (e.g. Town04) unless it is already loaded."""
    available = {path.rsplit("/", 1)[-1]: path for path in client.get_available_maps()}
    if town not in available:
        raise SimError(f"unknown town {town!r}; this server has: {', '.join(sorted(available))}")
    if world.get_map().name.rsplit("/", 1)[-1] == town:
        return world
    try:
        return client.load_world(town)
    except RuntimeError as error:
        raise SimError(f"could not load town {town!r}: {error}") from None


def find_blueprint(world: Any, blueprint_id: str) -> Any:
    library = world.get_blueprint_library()
    try:
        return library.find(blueprint_id)
    except IndexError:
        family = blueprint_id.split(".", 1)[0]
        known = sorted(b.id for b in library.filter(f"{family}.*"))[:8]
        raise SimError(f"blueprint {blueprint_id!r} is not in this server's library"
                       f"{' (it has e.g. ' + ', '.join(known) + ')' if known else ''}") from None


def _warn(what: str, error: BaseException) -> None:
    print(f"perception sim: warning: {what}: {error}", file=sys.stderr)


@contextmanager
def synchronous_mode(world: Any, fixed_delta_s: float,
                     traffic_manager: Any | None = None) -> Iterator[Any]:
    """Run the world in lock-step with us; restore the previous settings on the way out."""
    previous = world.get_settings()
    settings = world.get_settings()
    settings.synchronous_mode = True
    settings.fixed_delta_seconds = fixed_delta_s
    world.apply_settings(settings)
    try:
        if traffic_manager is not None:
            traffic_manager.set_synchronous_mode(True)
        yield world
    finally:
        if traffic_manager is not None:
            try:
                traffic_manager.set_synchronous_mode(False)
            except RuntimeError as error:
                _warn("could not take the Traffic Manager out of synchronous mode", error)
        try:
            world.apply_settings(previous)
        except RuntimeError as error:
            _warn("could not restore the world settings", error)


class SpawnedActors:
    """Every actor this run spawned; all destroyed on exit (ego braked, sensors first)."""

    def __init__(self, world: Any) -> None:
        self.world = world
        self.actors: list[Any] = []
        self.egos: list[Any] = []

    def spawn(self, blueprint: Any, transform: carla.Transform, attach_to: Any | None = None,
              ego: bool = False) -> Any:
        try:
            actor = self.world.spawn_actor(blueprint, transform, attach_to=attach_to)
        except RuntimeError as error:
            raise SimError(f"could not spawn {blueprint.id}: {error}") from None
        self.actors.append(actor)
        if ego:
            self.egos.append(actor)
        return actor

    def try_spawn(self, blueprint: Any, transform: carla.Transform) -> Any | None:
        actor = self.world.try_spawn_actor(blueprint, transform)
        if actor is not None:
            self.actors.append(actor)
        return actor

    def __enter__(self) -> SpawnedActors:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.destroy_all()

    def destroy_all(self) -> None:
        for ego in self.egos:
            try:
                ego.apply_control(carla.VehicleControl(throttle=0.0, brake=1.0, hand_brake=True))
            except RuntimeError as error:
                _warn(f"could not brake {ego.type_id}", error)
        sensors = [a for a in self.actors if a.type_id.startswith("sensor.")]
        others = [a for a in self.actors if not a.type_id.startswith("sensor.")]
        for actor in [*reversed(sensors), *reversed(others)]:
            try:
                if actor in sensors and actor.is_listening():
                    actor.stop()
                actor.destroy()
            except RuntimeError as error:
                _warn(f"could not destroy {actor.type_id} (id {actor.id})", error)
        self.actors.clear()
        self.egos.clear()
