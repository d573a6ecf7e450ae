"""What the Ray jobs share: each is a `julnet` sub-command (julnet.cli) run as the job's driver."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from julnet import cli


def run_command(command: str, argv: Sequence[str] | None) -> int:
    """`julnet <command> ARGV` in this driver: the job is the CLI's sub-command, with its flags and defaults."""
    return cli.main([command, *(sys.argv[1:] if argv is None else argv)])
