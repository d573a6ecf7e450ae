"""What the Ray jobs share: the `julnet` command's flags and Ray connection (julnet.cli), one way to report."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from julnet import cli


def run_command(command: str, argv: Sequence[str] | None) -> int:
    """`julnet <command> ARGV` in this driver: the job is the CLI's sub-command, with its flags and defaults."""
    return cli.main([command, *(sys.argv[1:] if argv is None else argv)])


def run_job(name: str, work: Callable[[], dict[str, Any]], errors: tuple[type[BaseException], ...]) -> int:
    """Run `work`; print its result as one JSON line and return 0, or print `<name>: error: ...` and return 2."""
    try:
        result = work()
    except errors as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0
