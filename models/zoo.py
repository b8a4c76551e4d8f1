"""The model zoo: named models, where their files are, and getting them safely.

`resolve(name)` returns a model's spec and a verified local path. It looks, in order, in the
cache (`PERCEPTION_CACHE_DIR`, default the XDG cache dir) and in a mirror
(`PERCEPTION_MODELS_MIRROR`, a folder laid out like the cache). Torch-free: the runtime uses it.
"""

from __future__ import annotations

import hashlib
import os
from functools import cache
from pathlib import Path

import yaml

from perception.errors import PerceptionError
from perception.modelspec import ModelSpec

REGISTRY = Path(__file__).with_name("zoo.yaml")


class ModelError(PerceptionError):
    """An unknown model name, or a model file that is missing, corrupt or fails its checksum."""


@cache
def registry() -> dict[str, ModelSpec]:
    data = yaml.safe_load(REGISTRY.read_text())
    return {name: ModelSpec.from_dict({"name": name, **entry})
            for name, entry in data["models"].items()}


def get_spec(name: str) -> ModelSpec:
    specs = registry()
    if name not in specs:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(sorted(specs))}")
    return specs[name]


def cache_dir() -> Path:
    if "PERCEPTION_CACHE_DIR" in os.environ:
        return Path(os.environ["PERCEPTION_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "perception" / "models"


def mirror() -> str | None:
    return os.environ.get("PERCEPTION_MODELS_MIRROR") or None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, spec: ModelSpec) -> Path:
    if spec.sha256 and sha256_of(path) != spec.sha256:
        raise ModelError(f"{path}: sha256 does not match the zoo's pinned value for "
                         f"{spec.name!r} (corrupt or a different file)")
    return path


def resolve(name: str) -> tuple[ModelSpec, Path]:
    """The spec and a checksum-verified local file for a zoo model."""
    spec = get_spec(name)
    cached = cache_dir() / spec.file
    if cached.is_file():
        return spec, verify(cached, spec)
    source = mirror()
    if source and not source.startswith(("http://", "https://")):
        mirrored = Path(source) / spec.file
        if mirrored.is_file():
            return spec, verify(mirrored, spec)
    raise ModelError(f"model {name!r} is not in the cache ({cache_dir()}) or the mirror "
                     f"({source or 'none set'}); run `perception models pull {name}`")
