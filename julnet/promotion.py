"""Champion/challenger promotion: evaluate both on the same held-out data, apply the policy, move `champion`.

Safe to run twice (a champion is never re-promoted, a decision already recorded is not recorded again) and
safe to run concurrently: the alias moves under the registry lock, and only if the champion is still the one
the challenger was compared with; otherwise the comparison is made again against the new champion.
Evaluations are stored on each version (tag `julnet.eval.<key>`, the key naming the data, the code and the
evaluation settings), so a model is evaluated once per dataset and code version.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from julnet.config import Config, PromotionConfig
from julnet import storage, tracking
from julnet.tracking import experiment_id, resolve_tracking_uri
from julnet.evaluation.result import METRIC_DIRECTIONS, EvaluationResult
from julnet.errors import RegistryError
from julnet.data.manifest import manifest_sha256, read_manifest
from julnet.registry import alias_version, register_run, registry_lock
from julnet.version import code_version

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
TAG_DECISION = "julnet.promotion"
EVAL_TAG_PREFIX = "julnet.eval."
MAX_ATTEMPTS = 5

Evaluator = Callable[[str], EvaluationResult]


@dataclass
class Check:
    """One rule of the policy applied to one metric."""

    metric: str
    rule: str  # "primary" or "guard"
    challenger: float | None
    champion: float | None
    change: float | None  # improvement in the metric's better direction (positive: challenger better)
    limit: float  # primary: must exceed; guard: must not fall below minus this
    passed: bool
    note: str = ""


@dataclass
class Decision:
    model_name: str
    challenger: str
    champion_before: str | None
    promoted: bool
    reason: str
    checks: list[Check] = field(default_factory=list)
    data: str = ""
    data_sha256: str = ""
    code_version: str = ""
    decided_at: float = 0.0

    @property
    def champion_after(self) -> str | None:
        return self.challenger if self.promoted else self.champion_before

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "champion_after": self.champion_after}

    def signature(self) -> str:
        """What makes two decisions the same (everything but the time it was taken)."""
        return json.dumps({k: v for k, v in self.to_dict().items() if k != "decided_at"}, sort_keys=True)


def improvement(metric: str, challenger: float, champion: float) -> float:
    """How much better the challenger is in `metric` (negative: worse), in the metric's units."""
    diff = challenger - champion
    return diff if METRIC_DIRECTIONS[metric] == "higher" else -diff


def decide(challenger: EvaluationResult, champion: EvaluationResult | None, policy: PromotionConfig) -> tuple[bool, str, list[Check]]:
    """Apply the policy: (promote?, one-line reason, the checks with their numbers)."""
    unknown = [m for m in [policy.primary, *policy.guards] if m not in METRIC_DIRECTIONS]
    if unknown:
        raise ValueError(f"promotion: unknown metric(s) {unknown}; known: {sorted(METRIC_DIRECTIONS)}")
    primary = challenger.metrics.get(policy.primary)
    if primary is None:
        why = challenger.unavailable.get(policy.primary, "not measured")
        return False, f"the challenger's {policy.primary} is unavailable ({why})", []
    if champion is None:
        check = Check(policy.primary, "primary", primary, None, None, policy.margin, True, "no champion yet")
        return True, f"no champion yet; the challenger has {policy.primary} {primary:.4f}", [check]
    checks = [_primary_check(policy.primary, primary, champion, policy.margin)]
    checks += [_guard_check(metric, challenger, champion, tol) for metric, tol in policy.guards.items() if metric != policy.primary]
    failed = [c for c in checks if not c.passed]
    if not failed:
        return True, f"{policy.primary} improved by {checks[0].change:.4f} (> {policy.margin}) and no guard degraded past its tolerance", checks
    return False, "; ".join(f"{c.metric}: {c.note}" for c in failed), checks


def _primary_check(metric: str, value: float, champion: EvaluationResult, margin: float) -> Check:
    other = champion.metrics.get(metric)
    if other is None:
        return Check(metric, "primary", value, None, None, margin, True, "the champion has no value: the challenger is the first measured")
    change = improvement(metric, value, other)
    note = "" if change > margin else f"improved by {change:.4f}, not more than the margin {margin}"
    return Check(metric, "primary", value, other, change, margin, change > margin, note)


def _guard_check(metric: str, challenger: EvaluationResult, champion: EvaluationResult, tolerance: float) -> Check:
    mine, theirs = challenger.metrics.get(metric), champion.metrics.get(metric)
    if mine is None and theirs is None:
        return Check(metric, "guard", None, None, None, tolerance, True, "unavailable for both")
    if mine is None:
        return Check(metric, "guard", None, theirs, None, tolerance, False, "the champion has it, the challenger cannot be measured")
    if theirs is None:
        return Check(metric, "guard", mine, None, None, tolerance, True, "the champion has no value")
    change = improvement(metric, mine, theirs)
    ok = change >= -tolerance
    return Check(metric, "guard", mine, theirs, change, tolerance, ok, "" if ok else f"degraded by {-change:.4f} (tolerance {tolerance})")


# ---- evaluations stored on versions ------------------------------------------------------------------------


def evaluation_key(data_sha256: str, settings: Config) -> str:
    """Names one (dataset, code, evaluation settings) combination: evaluations under one key are comparable."""
    blob = json.dumps({"data": data_sha256, "code": code_version(), "evaluation": settings.evaluation.model_dump(mode="json"),
                       "syncnet": settings.syncnet.weights.model_dump(mode="json")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def version_evaluation(client: MlflowClient, version: ModelVersion, key: str, evaluate: Evaluator) -> EvaluationResult:
    """The version's stored evaluation under `key`, or a fresh one (then stored on the version)."""
    stored = version.tags.get(EVAL_TAG_PREFIX + key)
    if stored:
        log.info("reusing the evaluation of models:/%s/%s (%s)", version.name, version.version, key)
        return EvaluationResult.from_dict(json.loads(stored))
    result = evaluate(f"models:/{version.name}/{version.version}")
    client.set_model_version_tag(version.name, version.version, EVAL_TAG_PREFIX + key, json.dumps(result.to_dict(), allow_nan=False))
    return result


# ---- promotion ---------------------------------------------------------------------------------------------


def promote(
    client: MlflowClient,
    challenger_version: str,
    data_uri: str,
    settings: Config,
    evaluate: Evaluator,
    record: Callable[[Decision], None] | None = None,
) -> Decision:
    """Compare a version with the champion on `data_uri` and move `champion` to it if the policy says so.

    `evaluate(model_uri)` measures one model (the same code, data and settings for both); `record` is called
    with every new decision, inside the lock (e.g. to log it as an MLflow run).
    """
    policy = settings.promotion
    name = policy.model_name
    data_sha = manifest_sha256(data_uri)
    key = evaluation_key(data_sha, settings)
    for _ in range(MAX_ATTEMPTS):
        challenger = client.get_model_version(name, challenger_version)
        champion = alias_version(client, name, CHAMPION)
        before = champion.version if champion else None
        if before == challenger.version:
            log.info("models:/%s/%s is already the champion: nothing to do", name, challenger.version)
            return Decision(name, challenger.version, before, False, "already the champion", data=data_uri, data_sha256=data_sha,
                            code_version=code_version(), decided_at=time.time())
        mine = version_evaluation(client, challenger, key, evaluate)
        theirs = version_evaluation(client, champion, key, evaluate) if champion else None
        promoted, reason, checks = decide(mine, theirs, policy)
        decision = Decision(name, challenger.version, before, promoted, reason, checks, data_uri, data_sha, code_version(), time.time())
        with registry_lock(client, name, policy.lock_timeout_s, policy.stale_lock_s):
            now = alias_version(client, name, CHAMPION)
            if (now.version if now else None) != before:
                log.info("the champion moved from %s to %s while evaluating: comparing again", before, now.version if now else None)
                continue
            _record(client, client.get_model_version(name, challenger.version), decision, record)
            if promoted:
                client.set_registered_model_alias(name, CHAMPION, challenger.version)
                log.info("promoted models:/%s/%s to champion (was %s): %s", name, challenger.version, before, reason)
            else:
                log.info("kept champion %s; models:/%s/%s not promoted: %s", before, name, challenger.version, reason)
        return decision
    raise RegistryError(f"the champion of {name} kept moving; gave up after {MAX_ATTEMPTS} comparisons")


def _record(client: MlflowClient, version: ModelVersion, decision: Decision, record: Callable[[Decision], None] | None) -> None:
    """Tag the decision on the challenger, unless the same decision is already there (running twice changes nothing)."""
    previous = version.tags.get(TAG_DECISION)
    if previous and _same(previous, decision):
        return
    client.set_model_version_tag(version.name, version.version, TAG_DECISION, json.dumps(decision.to_dict(), allow_nan=False))
    if record is not None:
        record(decision)


def _same(stored: str, decision: Decision) -> bool:
    try:
        data = json.loads(stored)
    except json.JSONDecodeError:
        return False
    data.pop("decided_at", None)
    return json.dumps(data, sort_keys=True) == decision.signature()


def format_decision(decision: Decision) -> str:
    """A plain-text table of the comparison and the outcome."""
    lines = [f"models:/{decision.model_name}/{decision.challenger} vs champion {decision.champion_before or '(none)'} on {decision.data}"]
    if decision.checks:
        width = max(len(c.metric) for c in decision.checks)
        lines.append(f"{'metric':<{width}}  {'rule':<7}  {'challenger':>10}  {'champion':>10}  {'change':>8}  ok")
        for c in decision.checks:
            lines.append(f"{c.metric:<{width}}  {c.rule:<7}  {_num(c.challenger):>10}  {_num(c.champion):>10}  {_num(c.change):>8}  "
                         f"{'yes' if c.passed else 'NO'}{'  ' + c.note if c.note else ''}")
    verdict = "PROMOTED" if decision.promoted else "not promoted"
    lines.append(f"{verdict}: {decision.reason}; champion is now {decision.champion_after or '(none)'}")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"


# ---- the command -------------------------------------------------------------------------------------------


def run_promotion(settings: Config, data_uri: str | None = None, version: str | None = None, run_id: str | None = None,
                  device: str = "cpu") -> Decision:
    """`julnet promote`: register `run_id` as the challenger (or take `version`, or the `challenger` alias), then
    promote it against the champion on `data_uri` (default: the challenger's own data manifest)."""
    from julnet.evaluation.suite import Judges, evaluate, load_judges
    from julnet.inference import load_model

    if data_uri:
        read_manifest(data_uri)  # a missing or bad manifest fails here, before a run is registered
    tracking_uri = resolve_tracking_uri(settings.tracking.uri)
    client = tracking.client(tracking_uri)
    name = settings.promotion.model_name
    if run_id:
        version = register_run(client, run_id, name, CHALLENGER).version
    elif version is None:
        found = alias_version(client, name, CHALLENGER)
        if found is None:
            raise RegistryError(f"no version of {name} is aliased @{CHALLENGER}: pass --run RUN_ID or --version N")
        version = found.version
    chosen = client.get_model_version(name, version)
    data_uri = data_uri or chosen.tags.get("julnet.data")
    if not data_uri or data_uri == "unknown":
        raise RegistryError(f"models:/{name}/{version} records no data manifest: pass --data MANIFEST_URI")
    @functools.cache
    def judges() -> Judges:  # the metric networks, loaded once, and only if an evaluation is not stored yet
        return load_judges(settings, device)

    def measure(model_uri: str) -> EvaluationResult:
        model = load_model(model_uri, device, tracking_uri)
        return evaluate(model, data_uri, settings, device=device, model_id=model_uri, judges=judges())

    return promote(client, version, data_uri, settings, measure, lambda d: log_decision(client, settings.tracking.experiment, d))


def log_decision(client: MlflowClient, experiment: str, decision: Decision) -> str:
    """The decision as a run of the `<experiment>-promotions` experiment (numbers as metrics, decision.json)."""
    name = f"{experiment}-promotions"
    run = client.create_run(experiment_id(client, name), run_name=f"{decision.model_name}-v{decision.challenger}-vs-{decision.champion_before or 'none'}",
                            tags={"julnet.promoted": str(decision.promoted).lower(), "julnet.reason": decision.reason[:5000]})
    run_id = run.info.run_id
    for key, value in (("model_name", decision.model_name), ("challenger", decision.challenger),
                       ("champion_before", decision.champion_before), ("champion_after", decision.champion_after), ("data", decision.data)):
        client.log_param(run_id, key, str(value))
    for check in decision.checks:
        for who in ("challenger", "champion"):
            value = getattr(check, who)
            if value is not None:
                client.log_metric(run_id, f"{who}.{check.metric}", value)
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/decision.json"
        storage.write_text(path, json.dumps(decision.to_dict(), indent=1))
        client.log_artifact(run_id, path)
    client.set_terminated(run_id)
    return run_id
