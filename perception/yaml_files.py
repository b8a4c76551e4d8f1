"""Reading the small YAML files people write by hand (camera files, model specs), safely.

`yaml.safe_load` builds no objects, but it still expands anchors and aliases: a 1 KB file of
nested aliases ("billion laughs") grows to gigabytes. Our files never need them, so any anchor
or alias is refused, and so is a file larger than `MAX_YAML_BYTES`.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from perception.errors import PerceptionError

MAX_YAML_BYTES = 64 * 1024  # a camera file or model spec is well under 2 KB


class YamlFileError(PerceptionError):
    """A YAML file that is missing, too large, malformed or uses anchors/aliases."""


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors (&name) and aliases (*name) before expanding anything."""

    def compose_node(self, parent, index):  # noqa: ANN001, ANN201 (PyYAML's signature)
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            mark = event.start_mark
            raise yaml.YAMLError(f"YAML anchors and aliases are not allowed (line "
                                 f"{mark.line + 1}, column {mark.column + 1})")
        return super().compose_node(parent, index)


def parse_yaml(text: str, where: str) -> object:
    """Parse YAML text without anchors or aliases; errors name `where`."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise YamlFileError(f"{where}: larger than {MAX_YAML_BYTES} bytes; not a camera or "
                            "model file")
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as error:
        raise YamlFileError(f"{where}: not valid YAML ({error})") from error
    except RecursionError:
        raise YamlFileError(f"{where}: nested too deeply") from None


def read_yaml(path: str | Path, what: str = "file") -> object:
    """Read and parse a YAML file of at most `MAX_YAML_BYTES`."""
    path = Path(path)
    if not path.is_file():
        raise YamlFileError(f"{path}: no such {what}")
    if path.stat().st_size > MAX_YAML_BYTES:
        raise YamlFileError(f"{path}: larger than {MAX_YAML_BYTES} bytes; not a {what}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise YamlFileError(f"{path}: cannot be read as UTF-8 text ({error})") from error
    return parse_yaml(text, str(path))
