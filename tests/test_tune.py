"""Ray Tune sweeps: search space from config, the held-out ranking metric, and real sweeps on a 2-CPU Ray cluster
with S3 storage and an MLflow server (two concurrent 1-worker trials; resume after the driver is killed)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from julnet import storage
from julnet.config import ConfigError, load_config
from julnet.models.build import build_models
from julnet.training.heldout import heldout_batch, heldout_metrics
from tests.conftest import REPO

# julnet.sweep imports ray, and ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when first imported: it is
# imported inside the tests, after the ray_cluster fixture has set it, or `ray_local` would leave the loopback.

# Six steps per trial, a report (checkpoint + evaluation) every two, evaluation on 4 training examples (the test
# dataset has no val videos). grace_period = steps: ASHA never stops a trial, so both must finish.
SHORT = [
    "--set", "sweep.steps=6", "--set", "sweep.grace_period=6", "--set", "train.checkpoint_every=2", "--set", "train.log_every=1",
    "--set", "tracking.image_every=100", "--set", "sweep.eval_split=train", "--set", "sweep.eval_examples=4",
]


def test_the_presets_sweeps_fit_their_configs():
    from julnet.sweep import check_sweep_config, sweep_steps

    paper, tiny = load_config("paper"), load_config("tiny")
    for cfg in (paper, tiny):
        check_sweep_config(cfg)
    assert (sweep_steps(paper), paper.sweep.use_gpu, paper.sweep.max_concurrent_trials) == (20000, True, 4)
    concurrent = tiny.sweep.max_concurrent_trials * (tiny.sweep.driver_cpus + tiny.sweep.workers_per_trial * tiny.sweep.cpus_per_worker)
    assert tiny.sweep.workers_per_trial == 1 and concurrent <= 1, "two trials leave one of two CPUs to Ray Data"


def test_search_space_follows_the_sweep_section():
    from julnet.sweep import base_point, search_space

    cfg = load_config("tiny", ["sweep.loss_weights=[pe, sync]", "sweep.loss_factor=2", "sweep.alpha_max=null", "sweep.spacing=[]"])
    space = search_space(cfg)
    assert set(space) == {"loss.pe", "loss.sync", "hist.bins"}, "switched-off dimensions keep the base value"
    assert (space["loss.pe"].lower, space["loss.pe"].upper) == (5.0, 20.0)
    assert math.isclose(space["loss.sync"].lower, 0.05) and math.isclose(space["loss.sync"].upper, 0.2)
    samples = {space["hist.bins"].sample() for _ in range(300)}
    assert samples == {9, 10, 11, 12, 13}, "bins are the integers 9..13, both ends included"
    assert base_point(cfg) == {"loss.pe": 10.0, "loss.sync": 0.1, "hist.bins": 11}


def test_a_trial_config_takes_the_sample_the_trial_resources_and_the_sweep_steps():
    from julnet.sweep import trial_config

    cfg = load_config("tiny", ["sweep.steps=7", "sweep.grace_period=7"])
    trial = trial_config(cfg, {"loss.pe": 4.5, "hist.bins": 13, "hist.spacing": "log"})
    assert (trial.loss.pe, trial.hist.bins, trial.hist.spacing) == (4.5, 13, "log")
    assert (trial.train.num_workers, trial.train.cpus_per_worker, trial.train.use_gpu) == (1, 0.45, False)
    assert [s.steps for s in trial.train.stages] == [7, cfg.train.stages[1].steps], "only the swept stage is shortened"
    assert trial.loss.un == cfg.loss.un and trial.optim == cfg.optim
    with pytest.raises(ConfigError, match="hist.bins"):
        trial_config(cfg, {"hist.bins": 1})


def test_the_ablation_experiment_is_a_grid_of_named_variants_and_seeds():
    from julnet.sweep import check_sweep_config, search_space, trial_config, trial_count

    cfg = load_config(str(REPO / "experiments" / "ablation.yaml"))
    check_sweep_config(cfg)
    space = search_space(cfg)
    assert space["variant"] == {"grid_search": list(cfg.sweep.variants)} and space["train.seed"] == {"grid_search": [0, 1, 2]}
    assert trial_count(cfg) == 8 * 3 and {"full", "no_un", "no_un1", "no_un2", "bins5", "bins21"} <= cfg.sweep.variants.keys()
    arm = trial_config(cfg, {"variant": "no_un1", "train.seed": 2})
    assert (arm.un.un1_weight, arm.un.un2_weight, arm.train.seed, arm.hist.bins) == (0.0, cfg.un.un2_weight, 2, cfg.hist.bins)
    assert trial_config(cfg, {"variant": "bins21", "train.seed": 0}).hist.bins == 21
    assert trial_config(cfg, {"variant": "kl_trains_generator", "train.seed": 0}).un.detach_error_in_kl is not cfg.un.detach_error_in_kl


@pytest.mark.parametrize(
    ("override", "message"),
    [("sweep.variants={}", "needs at least one named variant"), ("sweep.variants={typo: {un.nope: 1}}", "sweep.variants.typo: unknown config key"),
     ("sweep.variants={bad: {hist.bins: 1}}", "sweep.variants.bad: hist.bins")],
)
def test_a_bad_variant_is_refused_before_ray_starts(override: str, message: str):
    from julnet.sweep import check_sweep_config

    with pytest.raises(ConfigError, match=message):
        check_sweep_config(load_config(str(REPO / "experiments" / "ablation.yaml"), [override]))


def test_asha_stops_a_weak_trial_at_a_rung_but_never_at_its_last_report():
    from ray.tune.experiment import Trial

    from julnet.sweep import FinishingASHA

    scheduler = FinishingASHA(10, grace_period=2, reduction_factor=2)
    scheduler.set_search_properties("eval_mouth_l1", "min")
    good, weak, late = (Trial("julnet_trial", trial_id=name, stub=True) for name in ("good", "weak", "late"))
    for trial in (good, weak, late):
        scheduler.on_trial_add(None, trial)
    assert scheduler.on_trial_result(None, good, {"global_step": 2, "eval_mouth_l1": 0.1}) == "CONTINUE"
    assert scheduler.on_trial_result(None, weak, {"global_step": 2, "eval_mouth_l1": 0.5}) == "STOP", "worse at the first rung"
    assert scheduler.on_trial_result(None, good, {"global_step": 10, "eval_mouth_l1": 0.1}) == "CONTINUE"
    assert scheduler.on_trial_result(None, late, {"global_step": 10, "eval_mouth_l1": 0.9}) == "CONTINUE", (
        "at its last report a trial ends by itself, logging its model")


@pytest.mark.parametrize(
    ("override", "message"),
    [("sweep.bins=[13, 9]", "sweep.bins"), ("sweep.metric=total", "sweep.metric"), ("sweep.mode=max", "sweep.mode"),
     ("sweep.spacing=[log, log]", "sweep.spacing")],
)
def test_a_bad_sweep_section_is_rejected_with_its_key(override: str, message: str):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [override])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sweep.bins=[12, 13]", "sweep.bins"),
        ("sweep.stages=[nope]", "sweep.stages"),
        ("sweep.grace_period=1000", "sweep.grace_period"),
        ("loss.sync=0", "sweep.loss_weights"),
    ],
)
def test_a_sweep_that_does_not_fit_the_config_is_refused_but_training_is_not(override: str, message: str):
    from julnet.sweep import check_sweep_config

    cfg = load_config("tiny", [override])  # a training run may use any of these
    with pytest.raises(ConfigError, match=message):
        check_sweep_config(cfg)


def test_the_sweep_section_never_blocks_resuming_a_local_run(tmp_path: Path):
    from julnet.training.loop import _check_resumable

    cfg = load_config("tiny", ["sweep.num_samples=5"])
    older = {key: value for key, value in cfg.to_dict().items() if key != "sweep"}  # a checkpoint from before sweeps
    _check_resumable(older, cfg, tmp_path)
    with pytest.raises(ConfigError, match="hist.bins"):
        _check_resumable(older, cfg.with_values({"hist.bins": 9}), tmp_path)


def test_the_ranking_metric_is_a_fixed_batch_scored_without_any_lambda(grid_dataset):
    cfg = load_config("tiny")
    stage = cfg.train.stages[0]
    batch = heldout_batch(grid_dataset, stage, cfg.generator.num_references, "train", 6, seed=1)
    again = heldout_batch(grid_dataset, stage, cfg.generator.num_references, "train", 6, seed=1)
    assert all(torch.equal(batch[k], again[k]) for k in batch), "every trial and every report sees the same examples"
    torch.manual_seed(0)
    models = build_models(cfg, "cpu", pretrained=False).train()
    metrics = heldout_metrics(models, batch, "frame", torch.device("cpu"), chunk=4)
    assert models.talking_face.generator.training, "the training mode is restored after scoring"
    other = heldout_metrics(models, batch, "frame", torch.device("cpu"), chunk=6)
    assert metrics.keys() == {"eval_l1", "eval_mouth_l1", "eval_mouth_psnr"}
    assert all(math.isclose(metrics[k], other[k], rel_tol=1e-5) for k in metrics), "chunking does not change the result"
    with torch.no_grad():
        image = models.talking_face.generator.eval()(batch["source"].float() / 255, batch["references"].float() / 255, batch["audio"]).image
    target, mouth = batch["target"].float() / 255, (slice(None), slice(None), slice(32, 96), slice(8, 72))
    assert math.isclose(metrics["eval_l1"], (image - target).abs().mean().item(), rel_tol=1e-5)
    assert math.isclose(metrics["eval_mouth_l1"], (image - target)[mouth].abs().mean().item(), rel_tol=1e-5), "the mouth box at 104x80"
    with pytest.raises(ValueError, match="fewer than"):
        heldout_batch(grid_dataset, stage, cfg.generator.num_references, "train", 100000, seed=1)


def test_a_missing_eval_split_fails_before_ray_starts(grid_dataset, tmp_path):
    from ray_jobs.tune import main

    assert main(["--config", "tiny", "--data", grid_dataset, "--storage", str(tmp_path), "--name", "s"]) == 2, "no val videos"
    assert main(["--config", "tiny", "--data", str(tmp_path / "nope.json"), "--storage", str(tmp_path), "--name", "s"]) == 2
    assert not (tmp_path / "s").exists()


# ---- real sweeps ---------------------------------------------------------------------------------------


def _driver(cluster, args: list[str]) -> subprocess.Popen:
    """`python ray_jobs/tune.py ARGS` as its own driver process attached to the test cluster."""
    env = {**os.environ, "RAY_ADDRESS": cluster.address, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "ray_jobs/tune.py", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _sweep_args(data: str, storage_uri: str, name: str, mlflow_uri: str, *extra: str) -> list[str]:
    return ["--config", "tiny", "--data", data, "--storage", storage_uri, "--name", name,
            "--set", f"tracking.uri={mlflow_uri}", *SHORT, *extra]


def _runs(client: MlflowClient, filter_string: str):
    return client.search_runs([client.get_experiment_by_name("julnet").experiment_id], filter_string)


@pytest.mark.slow
def test_a_sweep_on_s3_runs_two_trials_side_by_side_and_resumes_after_its_driver_dies(ray_cluster, s3_grid, s3_server, mlflow_server):
    sweeps = s3_server.make_bucket()
    args = _sweep_args(s3_grid, sweeps, "sweep1", mlflow_server.uri)
    first = _driver(ray_cluster, args)
    deadline = time.monotonic() + 300
    while len(_stored(sweeps, "step-00000004/state.pt")) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert first.poll() is None, first.communicate()[0][-5000:]
    os.killpg(first.pid, signal.SIGKILL)  # the driver dies mid-sweep, with no chance to save anything more
    first.wait(timeout=60)
    done_at_kill = {uri.split("/")[-3] for uri in _stored(sweeps, "DONE.json")}

    second = _driver(ray_cluster, args)
    out, _ = second.communicate(timeout=400)
    assert second.returncode == 0, out[-5000:]
    client = MlflowClient(mlflow_server.uri)
    (parent,) = _runs(client, "tags.`julnet.run_name` = 'sweep1'")
    assert parent.info.status == "FINISHED", "the parent run was found again, not duplicated"
    trials = _runs(client, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(trials) == 2 and {t.info.status for t in trials} == {"FINISHED"}, out[-6000:]
    reports = {t.info.run_id: client.get_metric_history(t.info.run_id, "eval_mouth_l1") for t in trials}
    assert all([m.step for m in history] == [2, 4, 6] for history in reports.values()), "each report logged once"
    first_reports, last_reports = ([h[i].timestamp for h in reports.values()] for i in (0, -1))
    assert max(first_reports) < min(last_reports), "the two 1-worker trials ran side by side on 2 CPUs"
    for trial in trials:
        name = trial.data.tags["julnet.run_name"]
        assert [m.step for m in client.get_metric_history(trial.info.run_id, "total")] == [1, 2, 3, 4, 5, 6]
        resumed = [(m.step, m.value) for m in client.get_metric_history(trial.info.run_id, "resumed_from_step")]
        if name in done_at_kill:
            assert not resumed, "a trial that had finished did not train again"
        else:
            assert resumed in ([(3, 2.0)], [(5, 4.0)]), f"{name} went on from its latest registered checkpoint: {resumed}"
        assert 10 / 3 <= float(trial.data.params["loss.pe"]) <= 30 and 9 <= int(trial.data.params["hist.bins"]) <= 13
        assert trial.data.params["train.num_workers"] == "1"
    base = [t for t in trials if t.data.params["loss.pe"] == "10.0" and t.data.params["hist.bins"] == "11"]
    assert len(base) == 1, "the first trial runs the base (paper) values"

    rows = list(csv.DictReader(io.StringIO(Path(client.download_artifacts(parent.info.run_id, "results.csv")).read_text())))
    by_run = {t.info.run_id: t for t in trials}
    assert sorted(row["run_id"] for row in rows) == sorted(by_run) and {row["status"] for row in rows} == {"finished"}
    for row in rows:
        assert math.isclose(float(row["eval_mouth_l1"]), by_run[row["run_id"]].data.metrics["eval_mouth_l1"], rel_tol=1e-6)
        assert float(row["loss.pe"]) == float(by_run[row["run_id"]].data.params["loss.pe"])
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"results.csv", "metric_per_trial.png"}
    best_id = parent.data.tags["julnet.best_run_id"]
    assert best_id == min(rows, key=lambda row: float(row["eval_mouth_l1"]))["run_id"]
    assert parent.data.tags["julnet.best_model_uri"] == f"runs:/{best_id}/model"
    assert client.list_artifacts(best_id, "model"), "the best trial's model is logged where its URI points"
    (printed,) = [json.loads(line) for line in out.splitlines() if line.startswith('{"parent_run_id"')]
    assert printed["best_run_id"] == best_id and printed["best_model_uri"] == f"runs:/{best_id}/model"
    assert "eval_mouth_l1" in out and "finished" in out, "the results table is printed"

    third = _driver(ray_cluster, args)  # the finished sweep again: nothing trains, nothing is duplicated
    out, _ = third.communicate(timeout=300)
    assert third.returncode == 0, out[-5000:]
    assert len(_runs(client, "tags.`julnet.run_name` = 'sweep1'")) == 1
    again = _runs(client, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert {t.info.run_id for t in again} == set(by_run)
    assert all(len(client.get_metric_history(run_id, "total")) == 6 for run_id in by_run), "no trial trained again"


def _stored(sweeps: str, ending: str) -> list[str]:
    """Files under the sweep's trial folders whose URIs end with `ending`."""
    return [uri for uri in storage.list_files(f"{sweeps}/sweep1/trials", suffixes=ending.rsplit("/", 1)[-1]) if uri.endswith(ending)]


@pytest.mark.slow
def test_a_grid_sweep_runs_every_variant_to_the_end(ray_cluster, grid_dataset, mlflow_server, tmp_path):
    """The ablation's machinery on two arms: each trains its full steps (no early stopping), tagged with its variant."""
    args = ["--config", "experiments/ablation.yaml", "--data", grid_dataset, "--storage", str(tmp_path / "sweeps"), "--name", "grid1",
            "--set", f"tracking.uri={mlflow_server.uri}", *SHORT, "--set", "sweep.seeds=[3]", "--set", "sweep.max_concurrent_trials=2",
            "--set", "sweep.variants={full: {}, no_un2: {un.un2_weight: 0}}", "--set", "evaluation.split=train",
            "--set", "evaluation.max_frames=6", "--set", "evaluation.max_frames_per_video=3",
            "--set", "perceptual.vgg_width=0.25"]  # the machinery under test, at tiny's cost
    out, _ = _driver(ray_cluster, args).communicate(timeout=600)
    client = MlflowClient(mlflow_server.uri)
    (parent,) = _runs(client, "tags.`julnet.run_name` = 'grid1'")
    trials = _runs(client, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert {t.data.tags["julnet.sweep.variant"] for t in trials} == {"full", "no_un2"}, out[-5000:]
    for trial in trials:
        assert trial.info.status == "FINISHED" and trial.data.params["train.seed"] == "3"
        assert [m.step for m in client.get_metric_history(trial.info.run_id, "eval_mouth_l1")] == [2, 4, 6], "every arm ran to the end"
        assert trial.data.params["un.un2_weight"] == ("0.0" if trial.data.tags["julnet.sweep.variant"] == "no_un2" else "1.0")
    assert "[sweep grid1] 2/2 trials" in out and "no_un2" in out, "progress counts the grid's trials; the table names the variants"
    # sweep.score (the ablation's): the suite scored each arm's final model on its run, and the table sums up per variant.
    for trial in trials:
        assert 5 < trial.data.metrics["eval_psnr_mouth"] < 60 and -1 <= trial.data.metrics["eval_spearman_sigma"] <= 1
        assert trial.data.tags["julnet.eval.evaluated_model"] == f"runs:/{trial.info.run_id}/model"
    summary = out[out.index("per variant, mean ± std over seeds"):]
    assert summary.count("\nfull ") == 1 and summary.count("\nno_un2 ") == 1 and "psnr_mouth" in summary, out[-3000:]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"variants.csv", "variants.png"} <= artifacts, artifacts
    lines = Path(client.download_artifacts(parent.info.run_id, "variants.csv", str(tmp_path))).read_text().splitlines()
    assert lines[0].startswith("variant,trials,eval_mouth_l1_mean,eval_mouth_l1_std,") and "psnr_mouth_mean" in lines[0] and len(lines) == 3, lines


def test_the_variant_summary_is_the_mean_and_sample_std_over_each_variants_finished_seeds():
    from julnet.sweep import TrialRow, format_table, variant_summary, variants_csv
    from julnet.visualize import variant_plot

    def row(trial: str, variant: str, status: str, metric: float, psnr: float) -> TrialRow:
        return TrialRow(trial, status, 6, metric, f"run-{trial}", {"variant": variant, "train.seed": int(trial[-1])}, {"psnr_mouth": psnr})

    rows = [row("t0", "full", "finished", 0.10, 20.0), row("t1", "full", "finished", 0.20, 22.0),
            row("t2", "full", "error", math.nan, math.nan), row("t3", "no_un", "finished", 0.30, math.nan)]
    summary = variant_summary(rows, "eval_mouth_l1", ["psnr_mouth"])
    assert [(e["variant"], e["trials"]) for e in summary] == [("full", 2), ("no_un", 1)], "an errored trial is left out"
    assert summary[0]["stats"]["eval_mouth_l1"] == pytest.approx([0.15, math.sqrt(0.005)])
    assert summary[0]["stats"]["psnr_mouth"] == pytest.approx([21.0, math.sqrt(2.0)])
    assert all(math.isnan(v) for v in summary[1]["stats"]["psnr_mouth"]) and math.isnan(summary[1]["stats"]["eval_mouth_l1"][1])
    text = format_table({"trials": [vars(r) for r in rows], "metric": "eval_mouth_l1", "variants": summary})
    assert "21 ± 1.4" in text and "\nno_un    1       0.3 " in text and "n/a" in text, text
    assert variants_csv(summary).splitlines()[0] == "variant,trials,eval_mouth_l1_mean,eval_mouth_l1_std,psnr_mouth_mean,psnr_mouth_std"
    # One panel per metric some variant has a value for (240 px each): LPIPS, n/a everywhere without weights, has none.
    for r in rows:
        r.scores["lpips"] = math.nan
    with_lpips = variant_summary(rows, "eval_mouth_l1", ["psnr_mouth", "lpips"])
    assert all(math.isnan(e["stats"]["lpips"][0]) for e in with_lpips)
    plot = variant_plot(with_lpips)
    assert plot.shape == variant_plot(summary).shape == (2 * 240, plot.shape[1], 3) and plot.std() > 0
