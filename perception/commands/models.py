"""`perception models list | pull NAME... | info NAME`: the zoo from the command line."""

from __future__ import annotations

import argparse
import json

import yaml

from perception.zoo import registry as zoo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="the zoo's models and whether they are in the cache")
    pull = actions.add_parser("pull", help="download models into the cache (sha256-checked)")
    pull.add_argument("names", nargs="+", metavar="NAME")
    pull.add_argument("--force", action="store_true", help="fetch again even if cached")
    pull.add_argument("--mirror", help="a folder or base URL laid out like the cache "
                                       "(default: $PERCEPTION_MODELS_MIRROR)")
    info = actions.add_parser("info", help="a model's spec and where its file is")
    info.add_argument("name", metavar="NAME", help="zoo name, spec .yaml or .onnx")


def main(args: argparse.Namespace) -> int:
    if args.action == "list":
        print(f"{'name':<22}{'task':<14}{'input':<10}{'cached':<10}licence")
        for name in zoo.embedded():
            spec = zoo.get_spec(name)
            size = f"{spec.input.width}x{spec.input.height}"
            print(f"{name:<22}{spec.task:<14}{size:<10}{'embedded':<10}{spec.licence[:60]}")
        for name, spec in zoo.registry().items():
            cached = "yes" if zoo.cached_path(spec).is_file() else "no"
            size = f"{spec.input.width}x{spec.input.height}"
            print(f"{name:<22}{spec.task:<14}{size:<10}{cached:<10}{spec.licence}")
        print(f"default: {','.join(zoo.default_models())}; cache: {zoo.cache_dir()}")
    elif args.action == "pull":
        for name in args.names:
            path = zoo.pull(name, args.mirror, force=args.force)
            print(f"{name}: {path}")
    else:
        if args.name.endswith((".yaml", ".yml", ".onnx")) or args.name in zoo.embedded():
            spec, path = zoo.resolve(args.name)
        else:
            spec, path = zoo.get_spec(args.name), zoo.cached_path(zoo.get_spec(args.name))
        data = json.loads(json.dumps(spec.to_dict()))  # tuples -> lists for YAML
        data["classes"] = f"{len(spec.classes)} classes" if spec.classes else "none"
        data["local_file"] = str(path) if path.is_file() else "not downloaded"
        print(yaml.safe_dump(data, sort_keys=False).rstrip())
    return 0

