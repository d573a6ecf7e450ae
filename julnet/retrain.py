"""Scheduled retraining as one chain: check for new data -> preprocess -> (pre-train the SyncNet) -> train -> evaluate ->
register -> promote (`julnet retrain`, and ray_jobs/retrain.py for RayCronJob).

With nothing new under the raw prefix (julnet.freshness) and no `force` it stops after the check and says why. The
training run is named <name>-<hash of the raw fingerprint and the config>: running the same name on the same data
resumes it (finished steps are skipped or found again); new data or a new config starts a new run.

`Plan` builds each step's `julnet` command line once, for this chain (run in one process) and for the Kubeflow
pipeline (pipelines/, each heavy step a Ray job). The result: status (promoted, not_promoted, no_new_data), reason,
decision.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from mlflow import MlflowClient

from julnet import freshness, tracking
from julnet.config import DEFAULT_CONFIG, RESUMABLE_KEYS, Config, ConfigError, load_config
from julnet.errors import RegistryError, StepError
from julnet.registry import register_run
from julnet.tracking import RUN_NAME_TAG, resolve_tracking_uri

SYNCNET_MODEL = "julnet-syncnet"


Command = Callable[[list[str]], int]  # `julnet ARGV` in this process (julnet.cli.main), returning its exit code


@dataclass(frozen=True)
class Step:
    """One step as a `julnet` command line: a Ray job's entrypoint (`python -m julnet ARGV`), or run in this process."""

    name: str
    argv: tuple[str, ...]

    def command(self, python: str = "python") -> str:
        """The shell command that runs the step (the entrypoint of its Ray job)."""
        return shlex.join([python, "-m", "julnet", *self.argv])

    def run_here(self, julnet: Command) -> dict[str, Any]:
        """Run the step's command in this process, its output shown as it comes; its last JSON line, or StepError."""
        out, err = _Tee(sys.stdout), _Tee(sys.stderr)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = julnet(list(self.argv))
        if code:
            raise StepError(f"{self.name}: {error_line(err.text() + out.text()) or f'exited with {code}'}")
        return last_json(out.text())


class _Tee(io.TextIOBase):
    """Writes through to a stream and keeps a copy."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.stream.write(text)
        return self.copy.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def text(self) -> str:
        return self.copy.getvalue()


def last_json(text: str) -> dict[str, Any]:
    """The last line of a step's output that is a JSON object (every job prints its result that way), or {}."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                found = json.loads(line)
                if isinstance(found, dict):
                    return found
    return {}


def error_line(text: str) -> str:
    """The last line of a failed step's output that names an error (a one-line error or a traceback's last line)."""
    for line in reversed(text.splitlines()):
        if "error" in line.lower() or "exception" in line.lower():
            return line.strip()
    return ""


@dataclass(frozen=True)
class Plan:
    """One retraining: where the data is, the config, and how each step is called."""

    raw: str
    dataset: str
    storage: str
    name: str
    config: str = DEFAULT_CONFIG
    overrides: tuple[str, ...] = ()
    promotion: tuple[str, ...] = ()  # promotion.* overrides, for the promote step only
    syncnet_steps: int = 0
    eval_gpus: float = 0.0

    def __post_init__(self) -> None:
        bad = [o for o in self.promotion if not o.startswith("promotion.")]
        if bad:
            raise ConfigError(f"promotion overrides must set promotion.* keys, got {bad[0]!r}")
        if self.syncnet_steps < 0 or self.eval_gpus < 0:
            raise ConfigError("syncnet steps and evaluation GPUs must be >= 0")
        load_config(self.config, [*self.overrides, *self.promotion])  # a bad config fails here, in one line

    @property
    def model_name(self) -> str:
        return load_config(self.config, [*self.overrides, *self.promotion]).promotion.model_name

    @property
    def manifest(self) -> str:
        return f"{self.dataset.rstrip('/')}/manifest.json"

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        """The plan from to_dict()'s output, also after a trip through JSON or protobuf (numbers as floats)."""
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**{**values, "syncnet_steps": int(values.get("syncnet_steps", 0)), "eval_gpus": float(values.get("eval_gpus", 0.0))})

    def run_name(self, fingerprint: str) -> str:
        """<name>-<12 hex>: the same raw data and training config give the same run (so it resumes); settings a
        resumed run may change (logging, tracking, evaluation, promotion) are left out."""
        trained = {k: v for k, v in load_config(self.config, self.overrides).flat().items() if not k.startswith(RESUMABLE_KEYS)}
        blob = json.dumps({"raw": fingerprint, "config": trained}, sort_keys=True, default=str)
        return f"{self.name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

    def settings(self) -> Config:
        """The config the training steps run with (promotion overrides aside)."""
        return load_config(self.config, self.overrides)

    def check_tracking(self, jobs_uri: str | None) -> None:
        """A configured tracking.uri must be the jobs' MLFLOW_TRACKING_URI: the evaluation task finds runs:/ models only there."""
        configured = self.settings().tracking.uri
        if configured and configured != jobs_uri:
            raise ConfigError(f"tracking.uri is {configured} but the jobs' MLFLOW_TRACKING_URI is {jobs_uri or 'unset'}: the evaluation "
                              "task loads the model through MLFLOW_TRACKING_URI, so give MLflow's address there (the job's environment)")

    def _config_args(self, *extra: str) -> tuple[str, ...]:
        return ("--config", self.config, *(a for o in [*self.overrides, *extra] for a in ("--set", o)))

    # The heavy steps are the `julnet` commands the Ray jobs of ray_jobs/ run (preprocess --ray, train --name, ...).
    def preprocess(self) -> Step:
        return Step("preprocess", ("preprocess", "--ray", *self._config_args(), "--input", self.raw, "--output", self.dataset))

    def syncnet(self, run: str) -> Step:
        return Step("syncnet", ("train-syncnet", *self._config_args(), "--data", self.manifest, "--name", f"{run}-syncnet",
                                "--steps", str(self.syncnet_steps), "--model-name", SYNCNET_MODEL))

    def train(self, run: str, syncnet: str = "") -> Step:
        extra = (f"syncnet.weights.path={syncnet}",) if syncnet else ()
        return Step("train", ("train", *self._config_args(*extra), "--data", self.manifest, "--storage", self.storage, "--name", run))

    def evaluation_output(self, run: str) -> str:
        return f"{self.storage.rstrip('/')}/{run}/evaluation/result.json"

    def evaluate(self, run: str, run_id: str) -> Step:
        return Step("evaluate", ("evaluate", "--ray", "--model", f"runs:/{run_id}/model", "--data", self.manifest, *self._config_args(),
                                 "--out", self.evaluation_output(run), "--overwrite", "--tracking-run", run_id, "--device", self.eval_device))

    def promote(self, version: str) -> Step:
        return Step("promote", ("promote", *self._config_args(*self.promotion), "--version", version, "--data", self.manifest,
                                "--device", self.eval_device))

    @property
    def eval_device(self) -> str:
        return "cuda" if self.eval_gpus > 0 else "cpu"


def client_for(tracking_uri: str | None = None) -> MlflowClient:
    """An MLflow client for tracking and registry at the configured URI (else $MLFLOW_TRACKING_URI)."""
    return tracking.client(resolve_tracking_uri(tracking_uri))


def registered_syncnet(client: MlflowClient, experiment: str, run_name: str) -> str:
    """The SyncNet version an earlier attempt of this run already registered (so a resubmission does not train another), or ""."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return ""
    for run in client.search_runs([found.experiment_id], f"tags.`{RUN_NAME_TAG}` = '{run_name}'"):
        versions = client.search_model_versions(f"name='{SYNCNET_MODEL}' and run_id='{run.info.run_id}'")
        if versions:
            return f"models:/{SYNCNET_MODEL}/{max(int(v.version) for v in versions)}"
    return ""


def record_raw(client: MlflowClient, run_id: str, fresh: freshness.Freshness | dict[str, Any]) -> None:
    """Tag the training run with the raw data it was made from; registration copies the tags onto the version."""
    fresh = fresh if isinstance(fresh, freshness.Freshness) else freshness.Freshness(**{**fresh, "files": int(fresh["files"])})
    for key, value in fresh.tags().items():
        client.set_tag(run_id, key, value)


def register(client: MlflowClient, run_id: str, model_name: str) -> str:
    """Register the training run's model (with its lineage) as @challenger; returns the version."""
    return register_run(client, run_id, model_name, "challenger").version


def decision_of(client: MlflowClient, model_name: str, version: str) -> dict[str, Any]:
    """The promotion decision recorded on a version (julnet promote tags it there)."""
    from julnet.promotion import TAG_DECISION  # here: promotion imports the evaluation suite (torch)

    recorded = client.get_model_version(model_name, version).tags.get(TAG_DECISION)
    if not recorded:
        raise RegistryError(f"models:/{model_name}/{version} has no recorded promotion decision")
    return json.loads(recorded)


def outcome(decision: dict[str, Any]) -> dict[str, Any]:
    """The chain's result line from a promotion decision."""
    return {"status": "promoted" if decision["promoted"] else "not_promoted", "reason": decision["reason"], "decision": decision}


def retrain(plan: Plan, julnet: Command, force: bool = False) -> dict[str, Any]:
    """The whole chain in this process, each step the `julnet` command the pipeline submits as a Ray job (`julnet`
    runs them: julnet.cli.main); returns the result line."""
    plan.check_tracking(os.environ.get("MLFLOW_TRACKING_URI"))
    client = client_for()
    fresh = freshness.check(client, plan.model_name, plan.raw)
    print(fresh.reason, flush=True)
    if not fresh.new and not force:
        return {"status": "no_new_data", "reason": fresh.reason, "freshness": fresh.to_dict()}
    run = plan.run_name(fresh.fingerprint)
    plan.preprocess().run_here(julnet)
    syncnet = ""
    if plan.syncnet_steps:
        experiment = plan.settings().tracking.experiment
        syncnet = registered_syncnet(client, experiment, f"{run}-syncnet") or plan.syncnet(run).run_here(julnet)["model"]
    run_id = plan.train(run, syncnet).run_here(julnet)["run_id"]
    record_raw(client, run_id, fresh)
    plan.evaluate(run, run_id).run_here(julnet)
    version = register(client, run_id, plan.model_name)
    plan.promote(version).run_here(julnet)
    return {**outcome(decision_of(client, plan.model_name, version)), "run": run, "run_id": run_id, "version": version}
