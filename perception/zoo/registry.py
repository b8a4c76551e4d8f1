"""The model zoo: named models, what they are, and where their verified files are.

`resolve(name)` returns a model's spec and a checksum-verified local path. A name is one of:
- an embedded name (`multitask-lite`, ...): our own network, shipped in `perception/zoo/embedded/`;
- a zoo name from `zoo.yaml`: looked up in the cache (`PERCEPTION_CACHE_DIR`, default
  `$XDG_CACHE_HOME/perception/models`), then in a mirror folder used in place, else pulled from
  the mirror URL or the model's pinned URL into the cache (download.py);
- a spec file (`.yaml`) of a user's own ONNX, with the keys of `ModelSpec` and `file` relative
  to the spec file;
- an `.onnx` file carrying its spec as JSON in the metadata key `perception.spec` (our own
  network does).
A mirror (`--mirror` or `PERCEPTION_MODELS_MIRROR`) is a folder or a base URL laid out like
the cache. Reading a spec never loads a model: ONNX metadata is read from the file as data.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from functools import cache
from pathlib import Path

import yaml

from perception.errors import PerceptionError
from perception.modelspec import SPEC_METADATA_KEY, ModelSpec
from perception.zoo.download import ModelError, copy_verified, download, sha256_of
from perception.zoo.onnx_metadata import onnx_metadata

REGISTRY = Path(__file__).with_name("zoo.yaml")


# ---------------------------------------------------------------------------- the registry

@cache
def zoo_file() -> dict:
    return yaml.safe_load(REGISTRY.read_text())


@cache
def registry() -> dict[str, ModelSpec]:
    return {name: ModelSpec.from_dict({"name": name, **entry})
            for name, entry in zoo_file()["models"].items()}


def embedded() -> dict[str, Path]:
    """Our own network's files, shipped inside the package: name -> path."""
    return {name: REGISTRY.parent / file for name, file in zoo_file()["embedded"].items()}


def default_models() -> list[str]:
    return list(zoo_file()["default"])


def model_names(text: str, option: str = "--models") -> list[str]:
    """A comma-separated list of model names (as `--models` takes them), at least one."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise PerceptionError(f"{option} names no model")
    return names


def get_spec(name: str) -> ModelSpec:
    if name in embedded():
        return resolve_embedded(name)[0]
    specs = registry()
    if name not in specs:
        known = ", ".join(sorted([*embedded(), *specs]))
        raise ModelError(f"unknown model {name!r}; known: {known} "
                         "(or give a spec .yaml or an .onnx with perception.spec metadata)")
    return specs[name]


def spec_from_dict(data: dict, where: str) -> ModelSpec:
    try:
        return ModelSpec.from_dict(data)
    except (TypeError, KeyError, ValueError) as error:
        raise ModelError(f"{where}: not a valid model spec ({error})") from error


# ---------------------------------------------------------------------------- places

def cache_dir() -> Path:
    if os.environ.get("PERCEPTION_CACHE_DIR"):
        return Path(os.environ["PERCEPTION_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "perception" / "models"


def mirror(override: str | None = None) -> str | None:
    return override or os.environ.get("PERCEPTION_MODELS_MIRROR") or None


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def cached_path(spec: ModelSpec) -> Path:
    return cache_dir() / spec.file


# ---------------------------------------------------------------------------- checksums

def verify(path: Path, spec: ModelSpec) -> Path:
    if spec.sha256 and sha256_of(path) != spec.sha256:
        raise ModelError(f"{path}: sha256 does not match the pinned value for {spec.name!r} "
                         f"(corrupt or a different file; `perception models pull {spec.name} "
                         "--force` fetches it again)")
    return path


def pull(name: str, mirror_location: str | None = None, force: bool = False,
         progress: bool = True) -> Path:
    """Put a zoo model into the cache (from the mirror, else its pinned URL); its path."""
    if name in embedded():
        return resolve_embedded(name)[1]  # shipped with the package: nothing to pull
    spec = get_spec(name)
    dest = cached_path(spec)
    if dest.is_file() and not force:
        return verify(dest, spec)
    location = mirror(mirror_location)
    if location and not is_url(location):
        source = Path(location) / spec.file
        if not source.is_file():
            raise ModelError(f"mirror folder {location} has no {spec.file}")
        return copy_verified(source, dest, spec.sha256)
    url = f"{location.rstrip('/')}/{spec.file}" if location else spec.url
    if not url:
        raise ModelError(f"model {name!r} has no download URL and no mirror is set")
    return download(url, dest, spec.sha256, progress=progress)


# ---------------------------------------------------------------------------- resolving

def resolve(name: str, mirror_location: str | None = None, download_missing: bool = True
            ) -> tuple[ModelSpec, Path]:
    """The spec and a verified local file for a zoo name, a spec .yaml or an .onnx path."""
    if name.endswith((".yaml", ".yml")):
        return spec_from_yaml(Path(name))
    if name.endswith(".onnx"):
        return spec_from_onnx(Path(name))
    if name in embedded():
        return resolve_embedded(name)
    spec = get_spec(name)
    cached = cached_path(spec)
    if cached.is_file():
        return spec, verify(cached, spec)
    location = mirror(mirror_location)
    if location and not is_url(location) and (Path(location) / spec.file).is_file():
        return spec, verify(Path(location) / spec.file, spec)
    if not download_missing:
        raise ModelError(f"model {name!r} is not in the cache ({cache_dir()}) or the mirror "
                         f"({location or 'none set'}); run `perception models pull {name}`")
    return spec, pull(name, mirror_location)


def resolve_embedded(name: str) -> tuple[ModelSpec, Path]:
    """An embedded model: its spec from the ONNX metadata (of the .onnx beside a .pt)."""
    path = embedded()[name]
    spec, _ = spec_from_onnx(path.with_suffix(".onnx"))
    return replace(spec, name=name, file=path.name), path


def spec_from_yaml(path: Path) -> tuple[ModelSpec, Path]:
    """A user's own model: a YAML spec whose `file` (relative to it) is the ONNX."""
    if not path.is_file():
        raise ModelError(f"{path}: no such spec file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ModelError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from error
    if not isinstance(data, dict) or "file" not in data:
        raise ModelError(f"{path}: a model spec needs at least `file`, `task`, `decoder` and "
                         "`input` (see docs/runtime.md)")
    spec = spec_from_dict({"name": path.stem, **data}, str(path))
    model = (path.parent / spec.file).resolve()
    if not model.is_file():
        raise ModelError(f"{path}: model file {model} does not exist")
    return spec, verify(model, spec)


def spec_from_onnx(path: Path) -> tuple[ModelSpec, Path]:
    """An ONNX that carries its spec as JSON in the metadata key `perception.spec`."""
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        metadata = onnx_metadata(path)
    except PerceptionError as error:
        raise ModelError(str(error)) from error
    if SPEC_METADATA_KEY not in metadata:
        raise ModelError(f"{path}: has no {SPEC_METADATA_KEY!r} metadata; describe it with a "
                         "spec .yaml instead (see docs/runtime.md)")
    try:
        data = json.loads(metadata[SPEC_METADATA_KEY])
    except json.JSONDecodeError as error:
        raise ModelError(f"{path}: {SPEC_METADATA_KEY!r} metadata is not JSON ({error})") \
            from error
    data.setdefault("name", path.stem)
    data["file"] = path.name
    data["sha256"] = ""  # a file cannot carry its own checksum
    spec = spec_from_dict(data, str(path))
    return spec, path
