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

A spec from a user (a .yaml, an ONNX's metadata) is checked before anything uses it
(`spec_from_dict`): only the keys of `ModelSpec` and `InputSpec`, their types, and values the
runtime can work with (an input of 1 to `MAX_INPUT_SIDE` pixels a side, thresholds in [0, 1],
finite normalisation). A spec .yaml is read with perception/yaml_files.py: no anchors or
aliases, at most 64 KB.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import fields, replace
from functools import cache
from pathlib import Path

import pydantic
import yaml

from perception.errors import PerceptionError
from perception.modelspec import SPEC_METADATA_KEY, InputSpec, ModelSpec
from perception.yaml_files import read_yaml
from perception.zoo.download import ModelError, copy_verified, download, sha256_of
from perception.zoo.onnx_metadata import onnx_metadata

REGISTRY = Path(__file__).with_name("zoo.yaml")
MAX_INPUT_SIDE = 8192  # a model input larger than this a side is refused


# ---------------------------------------------------------------------------- the registry

@cache
def zoo_file() -> dict:
    return yaml.safe_load(REGISTRY.read_text())


@cache
def registry() -> dict[str, ModelSpec]:
    return {name: spec_from_dict({"name": name, **entry}, f"{REGISTRY}: {name}")
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


def spec_from_dict(data: object, where: str) -> ModelSpec:
    """A `ModelSpec` from plain data (a spec file, ONNX metadata, zoo.yaml), or a ModelError
    that says which key is wrong and why."""
    problems = _unknown_keys(data, ModelSpec, "")
    if isinstance(data, dict):
        problems += _unknown_keys(data.get("input", {}), InputSpec, "input.")
    if not problems:
        try:
            spec = _spec_adapter().validate_python(data)
        except pydantic.ValidationError as error:
            problems = [f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}"
                        for e in error.errors()]
        except RecursionError:
            problems = ["nested too deeply"]
        else:
            problems = _unusable_values(spec)
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise ModelError(f"{where}: not a valid model spec ({'; '.join(problems[:3])}{more}; "
                         "see docs/runtime.md)")
    return spec


@cache
def _spec_adapter() -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(ModelSpec)


def _unknown_keys(data: object, kind: type, prefix: str) -> list[str]:
    if not isinstance(data, dict):
        return [] if prefix else ["a model spec is a mapping of keys"]
    known = {f.name for f in fields(kind)}
    return [f"unknown key {prefix}{key!s:.40}" for key in data if key not in known]


def _unusable_values(spec: ModelSpec) -> list[str]:
    """What pydantic's types let through but the runtime cannot use."""
    size, problems = spec.input, []
    if not (1 <= size.width <= MAX_INPUT_SIDE and 1 <= size.height <= MAX_INPUT_SIDE):
        problems.append(f"input size {size.width}x{size.height}: each side must be 1 to "
                        f"{MAX_INPUT_SIDE} pixels")
    if not 0 <= size.pad_value <= 255:
        problems.append(f"input.pad_value {size.pad_value}: must be 0 to 255")
    if not (math.isfinite(size.scale) and size.scale > 0):
        problems.append(f"input.scale {size.scale}: must be a positive number")
    if not all(math.isfinite(v) for v in size.mean):
        problems.append(f"input.mean {size.mean}: must be finite numbers")
    if not all(math.isfinite(v) and v > 0 for v in size.std):
        problems.append(f"input.std {size.std}: must be positive numbers")
    for name in ("score_threshold", "nms_iou"):
        if not 0 <= getattr(spec, name) <= 1:
            problems.append(f"{name} {getattr(spec, name)}: must be 0 to 1")
    return problems


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
    data = read_yaml(path, "model spec")
    if not isinstance(data, dict) or "file" not in data:
        raise ModelError(f"{path}: a model spec needs at least `file`, `task`, `decoder` and "
                         "`input` (see docs/runtime.md)")
    spec = spec_from_dict({"name": path.stem, **data}, str(path))
    model = Path(os.path.realpath(path.parent / spec.file))  # a symlink loop: not a file
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
    except RecursionError:
        raise ModelError(f"{path}: {SPEC_METADATA_KEY!r} metadata is nested too deeply") \
            from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: {SPEC_METADATA_KEY!r} metadata is not a JSON object")
    data.setdefault("name", path.stem)
    data["file"] = path.name
    data["sha256"] = ""  # a file cannot carry its own checksum
    spec = spec_from_dict(data, str(path))
    return spec, path
