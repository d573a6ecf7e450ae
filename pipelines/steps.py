"""What each component of the julnet-retrain pipeline does; the components (pipelines.julnet_retrain) only call these.

Heavy steps are Ray jobs whose entrypoints julnet.retrain.Plan builds (the `julnet` command lines `julnet retrain` runs in one process);
the light ones (the data check, registration) are a few MLflow calls in the pipeline pod. Steps hand each other
small values only: the context dict of the check step, a manifest URI, a run id, a model version.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

from julnet import freshness
from julnet.retrain import Plan, Step, client_for, decision_of, last_json, outcome, record_raw, register, registered_syncnet
from pipelines.raysubmit import run_job
from pipelines.target import RayTarget


@dataclass(frozen=True)
class Context:
    """What every step after the check needs: the plan, where Ray is, MLflow, the run name and the data's fingerprint."""

    plan: Plan
    target: RayTarget
    tracking_uri: str
    run: str
    freshness: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan.to_dict(), "ray": self.target.to_dict(), "tracking_uri": self.tracking_uri, "run": self.run,
                "freshness": self.freshness}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Context:
        context = cls(Plan.from_dict(data["plan"]), RayTarget(**data["ray"]), data["tracking_uri"], data["run"], data["freshness"])
        if context.tracking_uri:  # for the MLflow calls made in the pipeline pod
            os.environ["MLFLOW_TRACKING_URI"] = context.tracking_uri
        return context

    def client(self) -> Any:
        """MLflow as the steps' jobs see it: tracking.uri of the config, else the pipeline's tracking URI."""
        return client_for(self.plan.settings().tracking.uri)

    def submit(self, step: Step, num_gpus: float = 0.0) -> dict[str, Any]:
        """Run a step as a Ray job (MLflow's address passed on); its JSON result line."""
        env = {"MLFLOW_TRACKING_URI": self.tracking_uri} if self.tracking_uri else {}
        return last_json(run_job(self.target, step.name, step.command(), env, num_gpus))


def check(plan: Plan, target: RayTarget, tracking_uri: str, force: bool) -> tuple[bool, str, dict[str, Any]]:
    """Is there new raw data since the champion? (go on?, the reason, the context for the next steps)."""
    if tracking_uri:
        plan.check_tracking(tracking_uri)
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    fresh = freshness.check(client_for(plan.settings().tracking.uri), plan.model_name, plan.raw)
    reason = fresh.reason if fresh.new or not force else f"{fresh.reason}; retraining anyway (force)"
    print(reason, flush=True)
    context = Context(plan, target, tracking_uri, plan.run_name(fresh.fingerprint), fresh.to_dict())
    return fresh.new or force, reason, context.to_dict()


def preprocess(context: dict[str, Any]) -> str:
    """Raw videos to shards (`julnet preprocess --ray`); the manifest URI."""
    ctx = Context.from_dict(context)
    return ctx.submit(ctx.plan.preprocess()).get("manifest", ctx.plan.manifest)


def syncnet(context: dict[str, Any], manifest: str) -> str:
    """Pre-train the SyncNet (`julnet train-syncnet --name`) when the plan asks for steps; its models:/ URI, or "".
    (`manifest`, the plan's manifest URI, orders the step after preprocessing.)"""
    ctx = Context.from_dict(context)
    if not ctx.plan.syncnet_steps:
        print("no SyncNet pre-training (syncnet_steps = 0): training uses the config's syncnet.weights")
        return ""
    experiment = ctx.plan.settings().tracking.experiment
    return registered_syncnet(ctx.client(), experiment, f"{ctx.run}-syncnet") or ctx.submit(ctx.plan.syncnet(ctx.run))["model"]


def train(context: dict[str, Any], manifest: str, syncnet_model: str) -> str:
    """Train (`julnet train --name`, resumed by run name) and tag the run with its raw data; the MLflow run id.
    (`manifest`, the plan's manifest URI, orders the step after preprocessing.)"""
    ctx = Context.from_dict(context)
    run_id = ctx.submit(ctx.plan.train(ctx.run, syncnet_model))["run_id"]
    record_raw(ctx.client(), run_id, ctx.freshness)
    return run_id


def evaluate(context: dict[str, Any], run_id: str) -> tuple[str, str]:
    """Evaluate the trained model on the held-out split (`julnet evaluate --ray`); (result URI, Markdown table)."""
    ctx = Context.from_dict(context)
    result = ctx.submit(ctx.plan.evaluate(ctx.run, run_id))  # the driver needs no GPU: its Ray task takes one with --device cuda
    return result.get("result", ctx.plan.evaluation_output(ctx.run)), metrics_markdown(result.get("metrics", {}))


def register_model(context: dict[str, Any], run_id: str) -> str:
    """Register the run's model with its lineage as @challenger; the version."""
    ctx = Context.from_dict(context)
    return register(ctx.client(), run_id, ctx.plan.model_name)


def promote(context: dict[str, Any], version: str) -> tuple[bool, str, str]:
    """Challenger against champion (`julnet promote` as a Ray job); (promoted?, status, the decision as Markdown)."""
    ctx = Context.from_dict(context)
    ctx.submit(ctx.plan.promote(version), ctx.plan.eval_gpus)
    client = ctx.client()
    result = outcome(decision_of(client, ctx.plan.model_name, version))
    report = decision_markdown(result["decision"]) + "\n" + comparison_markdown(*stored_evaluations(client, result["decision"]))
    return result["decision"]["promoted"], result["status"], report


def no_new_data(reason: str) -> str:
    """The early end's report, as Markdown."""
    return f"## No retraining: no new data\n\n{reason}\n"


def _num(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.4f}"


def stored_evaluations(client: Any, decision: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """The metrics promotion measured for the challenger and the champion it was compared with (on the same data and code)."""
    from julnet.promotion import EVAL_TAG_PREFIX

    def evaluations(version: str | None) -> dict[str, dict[str, Any]]:
        if not version:
            return {}
        tags = client.get_model_version(decision["model_name"], version).tags
        found = {k: json.loads(v) for k, v in tags.items() if k.startswith(EVAL_TAG_PREFIX)}
        return {k: v for k, v in found.items() if v["data_sha256"] == decision["data_sha256"] and v["code_version"] == decision["code_version"]}

    mine, theirs = evaluations(decision["challenger"]), evaluations(decision["champion_before"])
    key = next((k for k in mine if k in theirs), next(iter(mine), None))
    return (mine[key]["metrics"] if key else {}), (theirs.get(key, {}).get("metrics", {}) if key else {})


def comparison_markdown(challenger: dict[str, float], champion: dict[str, float]) -> str:
    """Every metric of challenger and champion side by side, with which way is better."""
    from julnet.evaluation.result import METRIC_DIRECTIONS

    rows = [f"| {m} | {_num(challenger.get(m))} | {_num(champion.get(m))} | {METRIC_DIRECTIONS.get(m, '')} |"
            for m in sorted({*challenger, *champion})]
    return "\n".join(["### Evaluation", "", "| metric | challenger | champion | better |", "| --- | --- | --- | --- |", *rows, ""])


def metrics_markdown(metrics: dict[str, float]) -> str:
    """An evaluation's metrics as a Markdown table (metric, value, which way is better)."""
    from julnet.evaluation.result import METRIC_DIRECTIONS

    rows = [f"| {name} | {_num(value)} | {METRIC_DIRECTIONS.get(name, '')} |" for name, value in sorted(metrics.items())]
    return "\n".join(["## Evaluation on the held-out split", "", "| metric | value | better |", "| --- | --- | --- |", *rows, ""])


def decision_markdown(decision: dict[str, Any]) -> str:
    """A promotion decision as Markdown: the verdict, the reason and the table of checks."""
    verdict = "PROMOTED" if decision["promoted"] else "not promoted"
    name = decision["model_name"]
    lines = [
        f"## models:/{name}/{decision['challenger']}: {verdict}", "",
        f"Champion before: {decision['champion_before'] or '(none)'}; after: {decision['champion_after'] or '(none)'}. "
        f"Data: `{decision['data']}` (sha256 {decision['data_sha256'][:12]}).", "",
        f"**Reason:** {decision['reason']}", "",
        "| metric | rule | challenger | champion | change | limit | ok | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in decision["checks"]:
        lines.append(f"| {c['metric']} | {c['rule']} | {_num(c['challenger'])} | {_num(c['champion'])} | {_num(c['change'])} | "
                     f"{c['limit']} | {'yes' if c['passed'] else 'NO'} | {c['note']} |")
    return "\n".join([*lines, ""])
