"""The evaluation suite (`julnet evaluate`, ray_jobs/evaluate.py) on the GRID clips' held-out video.

The SyncNet weights used here are a seeded random init saved to a file: TEST ONLY. They exercise the
"own SyncNet, configured weights" path; the LSE values they give mean nothing as a metric.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from scipy import linalg, stats

from julnet import storage
from julnet.cli import main as cli_main
from julnet.config import ConfigError, load_config
from julnet.data.loader import StepBatches, read_unit
from julnet.data.manifest import manifest_root
from julnet.evaluation.heldout import plan_videos, video_batches
from julnet.evaluation.publish import log_to_mlflow
from julnet.evaluation.result import METRIC_DIRECTIONS, EvaluationResult
from julnet.evaluation.suite import Judges, SyncJudge, _VideoSync, evaluate, load_judges
from julnet.evaluation.sync import lse
from julnet.evaluation.unavailable import Unavailable
from julnet.face import mask_mouth, mouth_box
from julnet.inference import load_model
from julnet.losses.sync import mouth_clip
from julnet.models.blocks import fold_batch_norm
from julnet.models.syncnet import SyncNet
from julnet.data.frames import flatten_batch
from tests.conftest import HELDOUT_VIDEO, run_cli
from tests.test_inception import random_inception_state_test_only

@pytest.fixture(scope="module")
def model_dir(heldout: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset trained for one step on the training video."""
    from julnet.training.loop import train_stage

    cfg = load_config("tiny", ["train.stages.0.steps=1", "train.stages.0.batch_size=2", "train.device=cpu"])
    stage = cfg.train.stages[0]
    out = tmp_path_factory.mktemp("model")
    train_stage(cfg, out, StepBatches(heldout, stage, cfg.generator.num_references, cfg.audio.window), stage)
    return out


@pytest.fixture(scope="module")
def syncnet_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """TEST ONLY: a seeded random tiny SyncNet saved as if it were trained weights."""
    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("syncnet") / "syncnet.pt"
    torch.save(SyncNet(load_config("tiny"), 5).state_dict(), path)
    return str(path)


def _settings(syncnet_file: str, *extra: str):
    return load_config("tiny", [f"syncnet.weights.path={syncnet_file}", *extra])


# ---------------------------------------------------------------- the held-out walk


def test_heldout_frames_come_in_order_as_training_examples(heldout: str):
    settings = load_config("tiny", ["evaluation.max_frames_per_video=12", "evaluation.batch_size=5"]).evaluation
    (plan,) = plan_videos(heldout, settings)
    assert (plan.video_id, plan.frames) == (HELDOUT_VIDEO, 12)
    batches = list(video_batches(plan, settings, (104, 80), 5))
    assert [(b.first_frame, len(b.batch["target"])) for b in batches] == [(0, 5), (5, 5), (10, 2)]
    frames, audio = read_unit(plan.units[0], 104, 80)
    target = torch.cat([b.batch["target"] for b in batches])
    assert torch.equal(target, torch.from_numpy(frames[:12]).permute(0, 3, 1, 2))
    assert torch.equal(torch.cat([b.batch["audio"] for b in batches]), torch.tensor(audio[:12]))
    first = batches[0].batch
    top, left, side = mouth_box(104, 80)
    assert torch.equal(first["source"], mask_mouth(first["target"])) and int(first["source"][..., top : top + side, left : left + side].sum()) == 0
    refs = first["references"].view(5, 5, 3, 104, 80)
    assert not any(torch.equal(refs[i, r], first["target"][i]) for i in range(5) for r in range(5)), "a reference is never the target"
    again = next(video_batches(plan, settings, (104, 80), 5)).batch["references"]
    reseeded = settings.model_copy(update={"seed": 1})
    other_seed = next(video_batches(plan_videos(heldout, reseeded)[0], reseeded, (104, 80), 5)).batch["references"]
    assert torch.equal(again, first["references"]) and not torch.equal(other_seed, first["references"])
    even = next(video_batches(plan, settings.model_copy(update={"references": "even"}), (104, 80), 5)).batch["references"]
    assert torch.equal(even[0], even[4]), "fixed references are the same for every frame"


def test_frame_limits_apply_per_video_and_in_total(heldout: str):
    settings = load_config("tiny", ["evaluation.split_by=identity", "evaluation.max_frames_per_video=20", "evaluation.max_frames=30"]).evaluation
    assert [p.frames for p in plan_videos(heldout, settings)] == [20, 10]
    with pytest.raises(ValueError, match="split 'val'"):
        plan_videos(heldout, settings.model_copy(update={"split": "val"}))


# ---------------------------------------------------------------- the metric networks


def test_streaming_lse_equals_lse_over_all_clips_at_once():
    cfg = load_config("tiny")
    torch.manual_seed(0)
    judge = SyncJudge(SyncNet(cfg, 5).eval(), "own", "test-only random weights")
    frames, audio = torch.rand(13, 3, 104, 80), torch.rand(13, cfg.audio.dim, 5)
    streamed = _VideoSync(judge, 5)
    with torch.no_grad():
        for rows in (slice(0, 3), slice(3, 7), slice(7, 13)):
            streamed.add(frames[rows], audio[rows])
        video = torch.cat([judge.net.embed_face(mouth_clip(frames[i : i + 5][None], 32)) for i in range(9)])
        sound = judge.net.embed_audio(audio[2:11])
    got, want = streamed.lse(4), lse(video, sound, 4)
    assert got["offset"] == want["offset"]
    assert got["lse_d"] == pytest.approx(want["lse_d"], rel=1e-5) and got["lse_c"] == pytest.approx(want["lse_c"], rel=1e-4, abs=1e-6)


def test_lse_never_runs_on_a_random_syncnet_and_own_syncnet_lse_is_labelled(syncnet_file: str):
    tiny = load_config("tiny")  # syncnet.weights.allow_random_init is true in tiny, for training only
    sync = load_judges(tiny).sync
    assert isinstance(sync, Unavailable) and "never used for evaluation" in sync.reason and "expert" in sync.reason
    off = load_judges(_settings(syncnet_file, "evaluation.own_syncnet_lse=false")).sync
    assert isinstance(off, Unavailable) and "own_syncnet_lse=false" in off.reason
    own = load_judges(_settings(syncnet_file)).sync
    assert isinstance(own, SyncJudge) and (own.source, own.suffix, own.weights) == ("own", "_own", syncnet_file)
    assert "set evaluation.expert_syncnet.path" in own.why_not_expert
    with pytest.raises(ConfigError, match="evaluation.lpips_vgg16.allow_random_init"):
        load_config("tiny", ["evaluation.lpips_vgg16.allow_random_init=true"])
    with pytest.raises(ValueError, match="does not fit"):
        load_judges(_settings(syncnet_file, "syncnet.embed_dim=32"))


# ---------------------------------------------------------------- the suite


def _projection_features(images: torch.Tensor) -> torch.Tensor:
    """TEST ONLY FID features: 8x8 average-pooled pixels through a fixed random projection (not Inception)."""
    weights = torch.Generator().manual_seed(3)
    projection = torch.randn(3 * 8 * 8, 6, generator=weights)
    return torch.nn.functional.adaptive_avg_pool2d(images, 8).flatten(1) @ projection


def test_suite_numbers_match_a_hand_computation_and_do_not_depend_on_batch_size(heldout: str, model_dir: Path, syncnet_file: str):
    loaded = load_model(model_dir)
    settings = _settings(syncnet_file, "evaluation.batch_size=4", "evaluation.max_frames_per_video=14", "evaluation.sparsification_steps=10")
    base = load_judges(settings)
    judges = Judges(base.lpips, _projection_features, base.sync)
    result = evaluate(loaded, heldout, settings, judges=judges, model_id="tiny-1-step")

    # The same frames by hand: generate (with the batch norms folded, as the suite runs the model), then PSNR by its
    # formula, Spearman with scipy, FID with sqrtm.
    face = fold_batch_norm(loaded[1])
    plan = plan_videos(heldout, settings.evaluation)[0]
    psnrs, psnrs_mouth, ranks, gen_all, real_all = [], [], [], [], []
    top, left, side = mouth_box(104, 80)
    with torch.no_grad():
        for chunk in video_batches(plan, settings.evaluation, (104, 80), 5):
            frames = flatten_batch(chunk.batch, "frame", torch.device("cpu"))
            outs = [face(frames.source[i : i + 1], frames.references[i : i + 1], frames.audio[i : i + 1]) for i in range(len(frames.target))]
            image = torch.cat([o.generated.image for o in outs])  # one frame at a time, as the suite generates
            sigma = torch.cat([o.uncertainty.log_sigma.exp() for o in outs])
            gen, real = image.double().numpy(), frames.target.double().numpy()
            for g, r, s in zip(gen, real, sigma.numpy()):
                psnrs.append(10 * math.log10(1 / np.mean((g - r) ** 2)))
                mouth = (slice(None), slice(top, top + side), slice(left, left + side))
                psnrs_mouth.append(10 * math.log10(1 / np.mean((g[mouth] - r[mouth]) ** 2)))
                ranks.append(stats.spearmanr(s.ravel(), np.abs(g - r).mean(axis=0).ravel()).statistic)
            gen_all.append(_projection_features(image).double().numpy())
            real_all.append(_projection_features(frames.target).double().numpy())
    gen_f, real_f = np.concatenate(gen_all), np.concatenate(real_all)
    s1, s2 = np.cov(gen_f, rowvar=False), np.cov(real_f, rowvar=False)
    fid = np.sum((gen_f.mean(0) - real_f.mean(0)) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)

    m = result.metrics
    assert result.counts == {"videos": 1, "frames": 14, "faceless_frames": 0, "lse_videos": 1, "calibration_frames": 14}
    assert m["psnr"] == pytest.approx(np.mean(psnrs), rel=1e-6) and m["psnr_mouth"] == pytest.approx(np.mean(psnrs_mouth), rel=1e-6)
    assert m["spearman_sigma"] == pytest.approx(np.mean(ranks), rel=1e-6)  # float32 errors vs float64 here
    new = {f"{k}_sigma" for k in ("nll", "aurg", "uce", "coverage50_gap", "coverage90_gap")}
    new |= {"aurg_error_pred", "aurc_confidence", "eaurc_confidence"}
    assert new <= m.keys()
    assert m["fid"] == pytest.approx(fid, rel=1e-6)
    assert result.lse_source == "own" and {"lse_d_own", "lse_c_own"} <= m.keys() and not {"lse_d", "lse_c"} & m.keys()
    assert "lse_d_own / lse_c_own" in result.unavailable["lse_d"] and "VGG-16" in result.unavailable["lpips"]
    assert len(result.sparsification["sigma"]) == 10 and result.sparsification["oracle"][0] == pytest.approx(result.sparsification["sigma"][0])
    assert result.directions == {k: METRIC_DIRECTIONS[k] for k in m}
    assert EvaluationResult.from_dict(json.loads(result.to_json())) == result

    batch_7 = settings.model_copy(update={"evaluation": settings.evaluation.model_copy(update={"batch_size": 7})})
    other = evaluate(loaded, heldout, batch_7, judges=judges)
    assert other.model_sha256 == result.model_sha256 and other.model == "in-memory model"
    assert other.metrics == pytest.approx(m, rel=1e-5, abs=1e-7)


@pytest.mark.slow  # a 24M-parameter network on CPU and a 2048x2048 matrix square root (tens of seconds on 2 cores)
def test_suite_reports_fid_from_a_configured_inception_file(heldout: str, model_dir: Path, syncnet_file: str, tmp_path: Path):
    """TEST ONLY Inception weights (seeded random, saved as a file): the `fid` value is a meaningless number; the
    test shows the configured file is loaded through the config and its 2048-d features reach the Fréchet distance."""
    path = tmp_path / "pt_inception-TEST-ONLY.pth"
    torch.save(random_inception_state_test_only(), path)
    settings = _settings(syncnet_file, f"evaluation.fid_inception.path={path}", "evaluation.max_frames=4", "evaluation.batch_size=2")
    result = evaluate(model_dir, heldout, settings)
    assert result.counts["frames"] == 4 and result.networks["fid"] == str(path)
    assert "fid" not in result.unavailable and math.isfinite(result.metrics["fid"]) and result.metrics["fid"] > 0


# ---------------------------------------------------------------- CLI, MLflow and the Ray job


def test_floor_rows_are_measured_like_any_model(heldout: str, capsys: pytest.CaptureFixture[str]):
    """The reference-copy baseline scores what copying the first reference scores; the untrained model sits below it."""
    from julnet.evaluation.suite import evaluate_with_config

    sets = ["evaluation.max_frames_per_video=14"]
    settings, copy = evaluate_with_config("baseline:reference-copy", heldout, "tiny", sets)
    by_hand = []
    for chunk in video_batches(plan_videos(heldout, settings.evaluation)[0], settings.evaluation, (104, 80), 5):
        frames = flatten_batch(chunk.batch, "frame", torch.device("cpu"))
        top, left, side = mouth_box(104, 80)
        for out, target in zip(frames.references[:, :3].double(), frames.target.double()):
            by_hand.append(10 * math.log10(1 / float(((out - target)[:, top : top + side, left : left + side] ** 2).mean())))
    assert copy.model == "baseline:reference-copy" and copy.counts["frames"] == len(by_hand) == 14
    assert copy.metrics["psnr_mouth"] == pytest.approx(np.mean(by_hand), rel=1e-5)
    assert "spearman_sigma" in copy.unavailable, "a constant σ ranks nothing: unavailable, not a flattering number"
    _, untrained = evaluate_with_config("baseline:untrained", heldout, "tiny", sets)
    assert untrained.metrics["psnr_mouth"] < copy.metrics["psnr_mouth"] - 3
    assert cli_main(["evaluate", "--model", "baseline:reference-copy", "--data", heldout]) == 2
    assert "has no config of its own: pass --config" in capsys.readouterr().err


@pytest.fixture(scope="module")
def cli_result(heldout: str, model_dir: Path, syncnet_file: str, mlflow_server, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    out = tmp_path_factory.mktemp("eval") / "result.json"
    proc = run_cli(
        "evaluate", "--model", str(model_dir), "--data", heldout, "--out", str(out), "--log",
        "--set", f"syncnet.weights.path={syncnet_file}", "--set", f"tracking.uri={mlflow_server.uri}",
    )
    assert "[evaluate] done: 25 frames in" in proc.stderr and "frames/s" in proc.stderr, "a final progress line with the rate"
    return json.loads(out.read_text()), proc.stdout, out


@pytest.mark.slow
def test_cli_prints_the_table_and_writes_json_and_plot(cli_result, heldout: str):
    result, table, out = cli_result
    assert result["split"] == "test" and result["counts"]["frames"] == 25 and result["lse_source"] == "own"
    assert result["data_sha256"] == hashlib.sha256(Path(heldout).read_bytes()).hexdigest()
    assert all(math.isfinite(v) for v in result["metrics"].values())
    assert {"psnr", "psnr_mouth", "lse_d_own", "lse_c_own", "spearman_sigma", "ause_sigma"} <= result["metrics"].keys()
    assert "VGG-16" in result["unavailable"]["lpips"] and "Inception" in result["unavailable"]["fid"]
    assert f"{result['metrics']['psnr']:.4f}  higher" in table and "lpips" in table and "unavailable: LPIPS needs" in table
    plot = out.with_name("result.sparsification.png")
    summary = json.loads(table.strip().splitlines()[-1])
    assert plot.read_bytes().startswith(b"\x89PNG") and summary["plot"] == str(plot) and summary["result"] == str(out)
    assert summary["metrics"] == result["metrics"], "the JSON line repeats the metrics for scripts"
    plots = ["result.reliability.png", "result.risk_coverage.png", "result.sparsification.png"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["result.json", *plots], "no temporary file left"
    assert all(out.with_name(name).read_bytes().startswith(b"\x89PNG") for name in plots)
    assert len(result["calibration_curves"]["reliability"]["predicted"]) == 10
    assert len(result["calibration_curves"]["risk_coverage"]["risk"]) == result["counts"]["calibration_frames"]


@pytest.mark.slow
def test_cli_logs_a_linked_evaluation_run(cli_result, mlflow_server):
    result, table, _ = cli_result
    client = MlflowClient(mlflow_server.uri)
    runs = client.search_runs(
        [client.get_experiment_by_name("julnet").experiment_id],
        f"tags.`julnet.kind` = 'evaluation' and tags.`julnet.evaluated_model_sha256` = '{result['model_sha256']}'",
    )
    assert len(runs) == 1 and runs[0].info.run_id in table
    run = runs[0]
    assert run.data.metrics == pytest.approx(result["metrics"])
    assert run.data.tags["julnet.data_sha256"] == result["data_sha256"] and run.data.tags["julnet.lse_source"] == "own"
    assert run.data.tags["julnet.code_version"] == result["code_version"] and "julnet.unavailable.lpips" in run.data.tags
    assert {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")} == {
        f"evaluation/{name}" for name in ("result.json", "sparsification.png", "reliability.png", "risk_coverage.png")}

    again = log_to_mlflow(EvaluationResult.from_dict(result), mlflow_server.uri)
    assert again == run.info.run_id, "the same evaluation lands in the same run"
    training = client.create_run(client.get_experiment_by_name("julnet").experiment_id).info.run_id
    assert log_to_mlflow(EvaluationResult.from_dict(result), mlflow_server.uri, run_id=training) == training
    logged = client.get_run(training).data
    assert logged.metrics["eval_psnr"] == pytest.approx(result["metrics"]["psnr"]) and logged.tags["julnet.eval.data_sha256"] == result["data_sha256"]
    folder = f"evaluation/{result['data_sha256'][:12]}"
    assert {a.path for a in client.list_artifacts(training, folder)} == {
        f"{folder}/{name}" for name in ("result.json", "sparsification.png", "reliability.png", "risk_coverage.png")}


def test_cli_bad_input_is_one_line_and_writes_nothing(model_dir: Path, heldout: str, tmp_path: Path, capsys):
    out = tmp_path / "result.json"
    assert cli_main(["evaluate", "--model", str(model_dir), "--data", str(tmp_path / "nope.json"), "--out", str(out)]) == 2
    assert cli_main(["evaluate", "--model", str(tmp_path / "no-model"), "--data", heldout, "--out", str(out)]) == 2
    assert cli_main(["evaluate", "--model", str(model_dir), "--data", heldout, "--set", "evaluation.split=val", "--out", str(out)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()[-3:]
    assert "no dataset manifest" in errors[0] and "model not found" in errors[1] and "split 'val'" in errors[2]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_ray_job_evaluates_in_a_task_and_writes_to_s3(
    ray_local, s3_bucket: str, heldout: str, model_dir: Path, syncnet_file: str, cli_result, mlflow_server
):
    from ray_jobs.evaluate import main

    root = manifest_root(heldout)
    for uri in storage.list_files(root):
        storage.upload_file(uri, f"{s3_bucket}/grid/{uri[len(root) + 1:]}")
    args = ["--model", str(model_dir), "--data", f"{s3_bucket}/grid/manifest.json", "--cpus-per-task", "1"]
    sets = ["--set", f"syncnet.weights.path={syncnet_file}", "--set", f"tracking.uri={mlflow_server.uri}"]
    assert main([*args, *sets, "--out", f"{s3_bucket}/eval/result.json", "--log"]) == 0
    result = json.loads(storage.read_text(f"{s3_bucket}/eval/result.json"))
    assert storage.exists(f"{s3_bucket}/eval/result.sparsification.png")
    local = cli_result[0]
    assert result["data_sha256"] == local["data_sha256"] and result["model_sha256"] == local["model_sha256"]
    assert result["metrics"] == pytest.approx(local["metrics"], rel=1e-4, abs=1e-5), "the same evaluation as the CLI (float sums differ with thread count)"
    bad = ["--model", str(model_dir / "missing"), "--data", f"{s3_bucket}/grid/manifest.json", "--out", f"{s3_bucket}/bad/result.json"]
    assert main(bad) == 2 and not storage.exists(f"{s3_bucket}/bad/result.json")
