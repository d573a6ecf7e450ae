"""What the run-shaped Ray jobs (train, tune) share on their command line."""

from __future__ import annotations

import argparse
import logging

import ray

from julnet import progress


def run_parser(doc: str | None, what: str) -> argparse.ArgumentParser:
    """--config, --set, --data, --storage and --name: a `what` (run, sweep) that the same name and storage resume."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="paper", help="preset name or YAML path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--data", required=True, help="dataset manifest URI (from preprocess)")
    parser.add_argument("--storage", required=True, help=f"where the {what} keeps its state and checkpoints: a folder or s3:// prefix")
    parser.add_argument("--name", required=True, help=f"{what} name; the same name and storage resume the {what}")
    return parser


def setup_logging() -> None:
    """INFO lines in one format on stderr; Ray Data's progress bars off unless stderr is a terminal (julnet.progress)."""
    progress.setup_logging(logging.INFO)


def connect_ray() -> None:
    """Join the cluster this job was submitted to (or start a local one), with julnet's logging in the workers and
    Ray Data's progress bars off when the job's output is not a terminal."""
    if not ray.is_initialized():
        ray.init(runtime_env=progress.ray_runtime_env())
