"""MetaDrive 0.4.3's asset folder, built offline from PyPI packages.

MetaDrive downloads `assets.zip` from GitHub on first use unless `metadrive/assets/` is
complete; on a machine that reaches only package registries that fails. This builds the
folder from what PyPI has (see docs/simulators.md):

- the art of the old `metadrive-simulator==0.2.6.0` wheel (vehicle models, skybox, sidewalk
  and ground textures, box, barrier, cone...), its vehicles moved from `models/vehicle/<name>/`
  to `models/<name>/` where 0.4.3 looks for them;
- textures 0.4.3 needs and 0.2.6.0 lacks (asphalt, grass, rock, the terrain heightfield),
  generated: smooth noise of the right size and kind, so the road is a textured grey, the
  verge green and the land gently rolling;
- Panda3D's own sphere model, and `version.txt`, which tells MetaDrive the folder is complete.

    python -m sim_bridge.metadrive_assets --wheel metadrive_simulator-0.2.6.0-py3-none-any.whl \
        --target VENV/lib/python3.11/site-packages/metadrive/assets --sphere PANDA3D/models/misc

The art belongs to MetaDrive and third parties (their licences): it is fetched at install
time, never committed here. Runs in MetaDrive's environment (numpy and OpenCV only).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np

ASSET_VERSION = "0.4.3"
WHEEL_ASSETS = "metadrive/assets/"
VEHICLES = ("ferra", "lada", "beetle", "130", "truck")
# Texture path -> (side px, base BGR colour or "normal"/"rough", noise amplitude, feature px)
TEXTURES = {
    "textures/asphalt/diff_2k.png": (2048, (78, 80, 82), 14, 3),
    "textures/asphalt/normal_2k.png": (2048, "normal", 10, 3),
    "textures/asphalt/rough_2k.png": (2048, "rough", 20, 6),
    "textures/grass1/GroundGrassGreen002_COL_1K.jpg": (1024, (40, 110, 70), 28, 4),
    "textures/grass1/GroundGrassGreen002_NRM_1K.jpg": (1024, "normal", 20, 4),
    "textures/grass2/grass_path_2_rough_1k.png": (1024, "rough", 20, 8),
    "textures/rock/brown_mud_leaves_01_diff_1k.png": (1024, (45, 70, 95), 30, 6),
    "textures/rock/brown_mud_leaves_01_nor_gl_1k.png": (1024, "normal", 20, 6),
    "textures/rock/brown_mud_leaves_01_rough_1k.png": (1024, "rough", 20, 8),
}
HEIGHTFIELD = "textures/terrain/heightfield.png"
HEIGHTFIELD_SIDE = 4096  # 16-bit; MetaDrive samples it down to its 2048 m terrain
CHECK_FILE = "textures/grass1/GroundGrassGreen002_COL_1K.jpg"  # MetaDrive's own completeness test


class AssetError(Exception):
    """The folder cannot be built (a missing or broken wheel, an unwritable target)."""


def is_complete(assets: Path) -> bool:
    """Whether MetaDrive will use `assets` as it is (and not try to download)."""
    version = assets / "version.txt"
    return (version.is_file() and version.read_text().strip() == ASSET_VERSION
            and (assets / CHECK_FILE).is_file()
            and all((assets / "models" / name / "vehicle.gltf").is_file() for name in VEHICLES))


def smooth_noise(side: int, feature_px: int, rng: np.random.Generator) -> np.ndarray:
    """(side, side) float32 noise in about [-1, 1] whose features are `feature_px` wide."""
    coarse = rng.standard_normal((max(2, side // feature_px),) * 2).astype(np.float32)
    return np.clip(cv2.resize(coarse, (side, side), interpolation=cv2.INTER_CUBIC) / 2.5, -1, 1)


def texture(side: int, kind: tuple[int, int, int] | str, amplitude: float, feature_px: int,
            rng: np.random.Generator) -> np.ndarray:
    """A tileable-looking procedural texture: colour with grain, a flat normal map with small
    bumps, or a roughness map."""
    grain = smooth_noise(side, feature_px, rng) + 0.5 * smooth_noise(side, feature_px * 8, rng)
    if kind == "normal":
        base = np.array([255.0, 128.0, 128.0])  # BGR of (0, 0, 1): facing straight up
        image = base + amplitude * np.stack([np.zeros_like(grain), grain, np.roll(grain, 7, 0)],
                                            axis=-1)
    elif kind == "rough":
        image = np.repeat((200.0 + amplitude * grain)[..., None], 3, axis=-1)
    else:
        image = np.asarray(kind, np.float32) + amplitude * grain[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


def heightfield(side: int, rng: np.random.Generator) -> np.ndarray:
    """A 16-bit terrain height map: low rolling hills (MetaDrive flattens it under roads)."""
    hills = smooth_noise(side, 256, rng) + 0.3 * smooth_noise(side, 64, rng)
    return np.clip(32768 + 6000 * hills, 0, 65535).astype(np.uint16)


def write_image(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise AssetError(f"could not write {path}")


def unpack_wheel(wheel: Path, folder: Path) -> None:
    """The 0.2.6.0 wheel's `metadrive/assets/` into `folder`, vehicles where 0.4.3 wants them."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = [m for m in archive.infolist()
                       if m.filename.startswith(WHEEL_ASSETS) and not m.is_dir()]
            if not members:
                raise AssetError(f"{wheel} has no {WHEEL_ASSETS} (is it metadrive-simulator "
                                 "0.2.6.0?)")
            for member in members:
                target = folder / member.filename[len(WHEEL_ASSETS):]
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
    except (OSError, zipfile.BadZipFile) as error:
        raise AssetError(f"cannot read {wheel}: {error}") from None
    for name in VEHICLES:
        source = folder / "models" / "vehicle" / name
        if not source.is_dir():
            raise AssetError(f"{wheel} lacks the vehicle model {name!r}")
        shutil.move(str(source), str(folder / "models" / name))


def build(wheel: Path, target: Path, sphere_folder: Path, seed: int = 0) -> None:
    """Build the complete folder beside `target` and move it into place (replacing it)."""
    sphere = sphere_folder / "sphere.egg.pz"
    if not sphere.is_file():
        raise AssetError(f"Panda3D's sphere model is not at {sphere}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".assets-") as temp:
        folder = Path(temp) / "assets"
        unpack_wheel(wheel, folder)
        rng = np.random.default_rng(seed)
        for relative, (side, kind, amplitude, feature_px) in TEXTURES.items():
            write_image(folder / relative, texture(side, kind, amplitude, feature_px, rng))
        write_image(folder / HEIGHTFIELD, heightfield(HEIGHTFIELD_SIDE, rng))
        (folder / "models" / "sphere.egg").write_bytes(zlib.decompress(sphere.read_bytes()))
        (folder / "version.txt").write_text(ASSET_VERSION + "\n")
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(folder), str(target))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=Path, required=True,
                        help="MetaDrive 0.4.3's asset folder: <site-packages>/metadrive/assets")
    parser.add_argument("--check", action="store_true",
                        help="only say whether the folder is complete (exit 0) or not (1)")
    parser.add_argument("--wheel", type=Path,
                        help="metadrive_simulator-0.2.6.0-py3-none-any.whl (pip download)")
    parser.add_argument("--sphere", type=Path,
                        help="Panda3D's models/misc folder (holds sphere.egg.pz)")
    args = parser.parse_args(argv)
    if is_complete(args.target):
        print(f"metadrive assets: {args.target} is complete", file=sys.stderr)
        return 0
    if args.check:
        return 1
    if args.wheel is None or args.sphere is None:
        parser.error("building the folder needs --wheel and --sphere")
    try:
        build(args.wheel, args.target, args.sphere)
    except AssetError as error:
        print(f"metadrive assets: {error}", file=sys.stderr)
        return 2
    print(f"metadrive assets: built {args.target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
