"""The fake cannot drift from the real API: every public name it offers exists in the wheel.

Checked against both the type stubs shipped in the `carla` 0.9.16 wheel (`libcarla.pyi`) and the
compiled module itself: the name exists in both, properties stay properties and methods stay
methods, and argument names match the compiled signature (Boost.Python docstrings) or, where
the compiled one does not name them, the stub. (The two disagree in places: the stub names
`Client.set_timeout`'s argument `second`, the compiled wheel `seconds`; we follow the wheel.)
"""

from __future__ import annotations

import ast
import inspect
import re
import time
from pathlib import Path

import pytest

carla = pytest.importorskip("carla", reason="needs the carla wheel (the [sim] extra)")

from sim_bridge import fake_carla  # noqa: E402

STUBS = Path(carla.__file__).parent / "libcarla.pyi"
CHECKED_DUNDERS = {"__iter__", "__len__", "__getitem__"}


def stub_members() -> dict[str, dict[str, list[list[str]]]]:
    """class -> member -> argument-name lists (one per overload), bases folded in."""
    tree = ast.parse(STUBS.read_text())
    classes: dict[str, dict[str, list[list[str]]]] = {}
    bases: dict[str, list[str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        members: dict[str, list[list[str]]] = {}
        for item in node.body:
            if isinstance(item, ast.FunctionDef):
                args = [a.arg for a in item.args.args][1:]
                members.setdefault(item.name, []).append(args)
            elif isinstance(item, ast.AnnAssign | ast.Assign):
                target = item.target if isinstance(item, ast.AnnAssign) else item.targets[0]
                members.setdefault(target.id, []).append([])
        classes[node.name] = members
        bases[node.name] = [b.id for b in node.bases if isinstance(b, ast.Name)]

    def folded(name: str) -> dict[str, list[list[str]]]:
        merged: dict[str, list[list[str]]] = {}
        for base in bases.get(name, []):
            merged.update(folded(base))
        merged.update(classes.get(name, {}))
        return merged

    return {name: folded(name) for name in classes}


def public_members(cls: type) -> dict[str, object]:
    members = {}
    for klass in reversed(cls.__mro__[:-1]):  # the fake's own bases, not object
        for name, value in vars(klass).items():
            if not name.startswith("_") or name in CHECKED_DUNDERS:
                members[name] = value
    return members


def compiled_arguments(real_class: type, name: str) -> list[list[str]]:
    """Argument names of each overload, read from the Boost.Python docstring."""
    doc = getattr(getattr(real_class, name), "__doc__", None) or ""
    overloads = re.findall(rf"^{name}\((.*?)\) ->", doc, flags=re.MULTILINE)
    return [re.findall(r"\)(\w+)", signature)[1:] for signature in overloads]


def matches(args: list[str], overload: list[str]) -> bool:
    """The fake's arguments are a prefix of the overload's (the wheel's `argN` match any)."""
    return len(args) <= len(overload) and all(
        a == o or re.fullmatch(r"arg\d+", o) for a, o in zip(args, overload, strict=False))


STUB = stub_members()


@pytest.mark.parametrize("fake_class", list(fake_carla.MIRRORS), ids=lambda c: c.__name__)
def test_fake_members_exist_in_the_wheel(fake_class: type) -> None:
    real_name = fake_carla.MIRRORS[fake_class]
    real_class = getattr(carla, real_name)
    stub = STUB[real_name]
    members = public_members(fake_class)
    assert members, f"{fake_class.__name__} offers nothing"
    for name, value in members.items():
        where = f"{fake_class.__name__}.{name} (carla.{real_name})"
        assert name in stub, f"{where} is not in libcarla.pyi"
        assert hasattr(real_class, name), f"{where} is not in the compiled wheel"
        real_is_property = isinstance(inspect.getattr_static(real_class, name), property)
        assert isinstance(value, property) == real_is_property, \
            f"{where}: property in one, method in the other"
        if callable(value) and name not in CHECKED_DUNDERS:
            args = [p for p in inspect.signature(value).parameters][1:]
            known = compiled_arguments(real_class, name) or stub[name]
            assert any(matches(args, overload) for overload in known), \
                f"{where}: arguments {args} match none of the wheel's {known}"


def test_every_carla_class_the_bridge_touches_is_mirrored() -> None:
    mirrored = set(fake_carla.MIRRORS.values())
    for needed in ("Client", "World", "BlueprintLibrary", "ActorBlueprint", "Vehicle", "Sensor",
                   "Image", "CollisionEvent", "LaneInvasionEvent", "Map", "Waypoint",
                   "TrafficManager"):
        assert needed in mirrored


def test_fake_image_has_carlas_layout() -> None:
    server = fake_carla.FakeServer().start("127.0.0.1", 2101)
    try:
        world = fake_carla.FakeClient("127.0.0.1", 2101).get_world()
        library = world.get_blueprint_library()
        ego = world.spawn_actor(library.find("vehicle.lincoln.mkz_2020"),
                                world.get_map().get_spawn_points()[0])
        camera_bp = library.find("sensor.camera.rgb")
        camera_bp.set_attribute("image_size_x", "64")
        camera_bp.set_attribute("image_size_y", "32")
        camera = world.spawn_actor(camera_bp, carla.Transform(carla.Location(z=1.5)),
                                   attach_to=ego)
        images = []
        camera.listen(images.append)
        frame = world.tick()
        for _ in range(200):
            if images:
                break
            time.sleep(0.01)
        image = images[0]
        assert (image.frame, image.width, image.height, image.fov) == (frame, 64, 32, 90.0)
        assert len(image.raw_data) == 64 * 32 * 4  # BGRA
        assert isinstance(image.transform, carla.Transform)
    finally:
        server.stop()


def test_compose_leaves_the_mount_alone() -> None:
    """The wheel's `Transform.transform(point)` overwrites `point`; compose must not let it."""
    from sim_bridge.geometry import compose

    mount = carla.Transform(carla.Location(x=0.8, z=1.5), carla.Rotation(pitch=-5.0))
    car = carla.Transform(carla.Location(x=10.0, y=5.0), carla.Rotation(yaw=90.0))
    camera = compose(car, mount)
    assert (mount.location.x, mount.location.y, mount.location.z) == pytest.approx((0.8, 0, 1.5))
    assert (camera.location.x, camera.location.y, camera.location.z) == pytest.approx(
        (10.0, 5.8, 1.5), abs=1e-5)
    assert (camera.rotation.pitch, camera.rotation.yaw) == pytest.approx((-5.0, 90.0))
