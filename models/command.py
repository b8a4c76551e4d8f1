"""Running a `perception` subcommand module as `python -m models.<name>` with the same exits."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from perception.errors import PerceptionError


def standalone(name: str, add_arguments: Callable[[argparse.ArgumentParser], None],
               main: Callable[[argparse.Namespace], int], doc: str | None) -> int:
    """Parse argv, run `main`; a `PerceptionError` is one line on stderr and exit code 2."""
    parser = argparse.ArgumentParser(prog=f"python -m models.{name}",
                                     description=(doc or "").splitlines()[0] if doc else None)
    add_arguments(parser)
    try:
        return int(main(parser.parse_args()) or 0)
    except PerceptionError as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        return 2
