"""Create or update the KFP recurring run of julnet-retrain: no catch-up, at most one run at a time.

    python -m pipelines.schedule --host https://kfp.example.com --cron '0 3 * * *' \\
        --param raw_uri=s3://raw/hdtf --param dataset_uri=s3://data/hdtf --param storage_uri=s3://runs

KFP's scheduler reads cron with a seconds field first (six fields, robfig/cron: `0 0 3 * * *` is 03:00 daily); a
five-field cron is taken as the usual minute-first form and gets seconds 0. KFP has no update call for recurring
runs, so an existing one of the same name in the experiment is deleted and created again with the new settings.
--dry-run prints what would be sent and contacts nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

YAML = Path(__file__).with_name("julnet_retrain.yaml")
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*?/,\-]+$")


def kfp_cron(expression: str) -> str:
    """The six-field cron (seconds first) KFP expects, from a five- or six-field expression."""
    fields = expression.split()
    if len(fields) not in (5, 6) or not all(_CRON_FIELD.match(f) for f in fields):
        raise ValueError(f"cron {expression!r}: expected 5 fields (minute hour day month weekday) or 6 (seconds first)")
    return " ".join(["0", *fields] if len(fields) == 5 else fields)


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE pipeline parameters; a value that parses as JSON (lists, numbers, true) is taken as JSON."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {pair!r}: expected KEY=VALUE")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def request(args: argparse.Namespace) -> dict[str, Any]:
    """The recurring run's settings, as they are sent to create_recurring_run."""
    return {
        "job_name": args.name, "description": "julnet-retrain on a schedule", "cron_expression": kfp_cron(args.cron),
        "max_concurrency": 1, "no_catchup": True, "params": parse_params(args.param), "pipeline_package_path": str(args.pipeline),
        "enabled": True, "enable_caching": False, "service_account": args.service_account or None,
    }


def schedule(client: Any, experiment: str, settings: dict[str, Any], namespace: str | None = None) -> str:
    """Create the recurring run in `experiment`, replacing one of the same name; returns its id."""
    experiment_id = client.create_experiment(experiment, namespace=namespace).experiment_id
    for existing in _recurring_runs(client, experiment_id, settings["job_name"], namespace):
        print(f"replacing recurring run {existing.recurring_run_id} ({existing.display_name})")
        client.delete_recurring_run(existing.recurring_run_id)
    created = client.create_recurring_run(experiment_id=experiment_id, **settings)
    return created.recurring_run_id


def _recurring_runs(client: Any, experiment_id: str, name: str, namespace: str | None) -> list[Any]:
    """The recurring runs of the experiment with this display name."""
    where = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})
    found = client.list_recurring_runs(experiment_id=experiment_id, namespace=namespace, filter=where, page_size=100)
    return [r for r in (found.recurring_runs or []) if r.display_name == name]


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cron", required=True, help="when: '0 3 * * *' (5 fields) or '0 0 3 * * *' (6, seconds first)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="a pipeline parameter (JSON values allowed)")
    parser.add_argument("--host", default=None, help="KFP API endpoint (default: kfp.Client's, e.g. in-cluster)")
    parser.add_argument("--namespace", default=None, help="the Kubeflow profile namespace (multi-user deployments)")
    parser.add_argument("--experiment", default="julnet", help="KFP experiment of the runs")
    parser.add_argument("--name", default="julnet-retrain-nightly", help="recurring run name; an existing one is replaced")
    parser.add_argument("--service-account", default="julnet-pipeline", help="Kubernetes service account of the runs' pods ('' for KFP's)")
    parser.add_argument("--pipeline", type=Path, default=YAML, help="compiled pipeline YAML")
    parser.add_argument("--dry-run", action="store_true", help="print the request and contact nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = request(args)
        if not args.pipeline.is_file():
            raise ValueError(f"no compiled pipeline at {args.pipeline} (run python -m pipelines.julnet_retrain)")
    except ValueError as exc:
        print(f"schedule: error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(json.dumps({"experiment": args.experiment, "namespace": args.namespace, **settings}, indent=1))
        return 0
    import kfp

    run_id = schedule(kfp.Client(host=args.host, namespace=args.namespace or "kubeflow"), args.experiment, settings, args.namespace)
    print(json.dumps({"recurring_run_id": run_id, "name": args.name, "cron": settings["cron_expression"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
