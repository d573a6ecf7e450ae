"""The `julnet` command: one entry point per ML stage, all sharing --config and --set.

Each `ray_jobs/<stage>.py` is the same command run as a Ray job: it builds its command line with the helpers below
(add_config_args, add_run_args), so flags and defaults are the same at both doors.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from julnet.config import DEFAULT_CONFIG, Config, ConfigError, load_config
from julnet.errors import GenerateError, MissingWeightsError, RegistryError, StepError, user_error
from julnet import storage
from julnet.cluster import connect_ray, ray_mapper, ray_task
from julnet.progress import setup_logging

BESIDE = ""  # --uncertainty-video / --epistemic-video without a path: next to the output


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """--config (default DEFAULT_CONFIG) and --set KEY=VALUE, as every stage takes them."""
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"preset name (paper, tiny) or YAML path (default: {DEFAULT_CONFIG})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. hist.bins=9")


def add_run_args(parser: argparse.ArgumentParser, what: str) -> None:
    """--data, --storage and --name of a `what` (run, sweep) on Ray that the same name and storage resume."""
    parser.add_argument("--data", required=True, metavar="MANIFEST_URI", help="dataset manifest URI (from preprocess)")
    parser.add_argument("--storage", required=True, help=f"where the {what} keeps its state and checkpoints: a folder or s3:// prefix")
    parser.add_argument("--name", required=True, help=f"{what} name; the same name and storage resume the {what}")


def _info(args: argparse.Namespace) -> None:
    from julnet.info import model_info

    print(json.dumps(model_info(load_config(args.config, args.overrides)), indent=2))


def _train(args: argparse.Namespace) -> None:
    """--out: one stage in this process; --name: the whole curriculum on Ray Train workers (ray_jobs/train.py)."""
    if args.name:
        _train_on_ray(args)
        return
    from julnet.data.loader import StepBatches
    from julnet.data.synthetic import SyntheticFaces
    from julnet.training.loop import train_stage

    if args.storage or args.stages:
        raise ConfigError("--storage and --stages train on Ray Train workers: use them with --name, not --out")
    overrides = list(args.overrides)
    cfg = load_config(args.config, overrides)
    stage = cfg.train.stage(args.stage)
    if args.steps is not None:
        index = cfg.train.stages.index(stage)
        cfg = load_config(args.config, [*overrides, f"train.stages.{index}.steps={args.steps}"])
        stage = cfg.train.stages[index]
    if args.synthetic == bool(args.data):
        raise ConfigError("pass exactly one of --data MANIFEST_URI and --synthetic")
    if args.data:
        batches = StepBatches(args.data, stage, cfg.generator.num_references, cfg.audio.window, cfg.train.seed, mix=cfg.train.mix_chunks)
    else:
        batches = SyntheticFaces(cfg, stage, seed=cfg.train.seed).batch
    result = train_stage(cfg, Path(args.out), batches, stage, init=Path(args.init) if args.init else None)
    print(json.dumps({"step": result.step, "checkpoint": str(result.checkpoint), "metrics": result.metrics}))


def _train_on_ray(args: argparse.Namespace) -> None:
    from julnet.data.manifest import read_manifest
    from julnet.pretrained import check_configured
    from julnet.training.distributed import train_run

    if not (args.data and args.storage):
        raise ConfigError("--name trains on Ray Train workers: it needs --data MANIFEST_URI and --storage")
    if args.synthetic or args.stage or args.steps is not None:
        raise ConfigError("--synthetic, --stage and --steps train one stage in this process: use them with --out, not --name")
    cfg = load_config(args.config, args.overrides)
    read_manifest(args.data)  # bad config, data or weights fail here, before Ray or any worker starts
    check_configured(cfg)
    connect_ray()
    print(json.dumps(train_run(cfg, args.data, args.storage, args.name, args.stages.split(",") if args.stages else None, args.init)))


def _train_syncnet(args: argparse.Namespace) -> None:
    from julnet.data.manifest import read_manifest
    from julnet.models.syncnet import clip_stage
    from julnet.training.syncnet import manifest_sources, synthetic_sources, train_syncnet

    if args.synthetic == (args.data is not None):
        raise ConfigError("pass exactly one of --synthetic and --data MANIFEST_URI")
    cfg = load_config(args.config, args.overrides)
    if args.name:
        if args.synthetic:
            raise ConfigError("--name trains on Ray from --data MANIFEST_URI, not --synthetic")
        read_manifest(args.data)  # a missing manifest fails here, before Ray starts
        connect_ray()
        from julnet.registry import pretrain_and_register

        print(json.dumps(pretrain_and_register(cfg, args.data, args.name, args.steps, args.model_name)))
        return
    stage = clip_stage(cfg)
    train, heldout, source = synthetic_sources(cfg, stage) if args.synthetic else manifest_sources(cfg, stage, args.data)
    metrics = train_syncnet(cfg, train, heldout, args.steps, Path(args.out), cfg.train.log_every, heldout=source)
    print(json.dumps({"weights": metrics["weights"], "heldout": metrics["heldout"], "eval": metrics["eval"]}))


def _tune(args: argparse.Namespace) -> int:
    from julnet.sweep import check_sweep_inputs, format_table, run_sweep

    cfg = load_config(args.config, args.overrides)
    check_sweep_inputs(cfg, args.data)  # bad config, data or weights fail here, before Ray starts
    connect_ray()
    outcome = run_sweep(cfg, args.data, args.storage, args.name)
    print(format_table(outcome))
    print(json.dumps({key: outcome.get(key) for key in ("parent_run_id", "best_trial", "best_run_id", "best_model_uri", "best_metric")}))
    if not outcome.get("best_run_id"):
        print("julnet tune: error: no trial finished; see the table and the parent MLflow run", file=sys.stderr)
        return 1
    return 0


def _preprocess(args: argparse.Namespace) -> int:
    from julnet.data.preprocess import check_output, run
    from julnet.evaluation.av_sync import load_scorer
    from julnet.evaluation.unavailable import Unavailable

    cfg = load_config(args.config, args.overrides)
    check_output(args.input, args.output, args.overwrite)  # a bad output fails here, before the SyncNet loads or Ray starts
    scorer = load_scorer(cfg)  # the expert SyncNet, else the project's own, else why AV sync is skipped
    if isinstance(scorer, Unavailable):
        print(f"julnet preprocess: AV sync skipped: {scorer.reason}", file=sys.stderr)
    mapper = map
    if args.ray:
        connect_ray()
        mapper = ray_mapper(args.cpus_per_task)
    elif args.workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(args.workers)
        mapper = pool.map
    manifest, report = run(args.input, args.output, cfg, mapper, None if isinstance(scorer, Unavailable) else scorer, args.overwrite)
    reasons: dict[str, int] = {}
    for rejection in report.rejected:
        reasons[rejection.reason] = reasons.get(rejection.reason, 0) + 1
    frames = sum(v.frames for v in manifest.videos)
    print(json.dumps({"manifest": f"{args.output.rstrip('/')}/manifest.json", "accepted": report.accepted, "frames": frames, "rejected": reasons}))
    if report.accepted == 0:
        print("julnet preprocess: error: no usable video came out (see report.json)", file=sys.stderr)
        return 1
    return 0


def _generate(args: argparse.Namespace) -> int:
    """--video/--audio: one video in this process; --manifest: every pair of a manifest on Ray Data actors."""
    if args.epistemic_samples is not None:  # the flag is generate.epistemic_samples, so --manifest pairs get it too
        args.overrides = [*args.overrides, f"generate.epistemic_samples={args.epistemic_samples}"]
    if args.manifest:
        return _generate_batch(args)
    from julnet.inference import dub

    if not (args.video and args.audio):
        raise ConfigError("pass --video and --audio (one video, in this process) or --manifest (pairs, on Ray Data)")
    if (args.workers, args.cpus_per_worker, args.gpus_per_worker) != (None, None, None):
        raise ConfigError("--workers, --cpus-per-worker and --gpus-per-worker size the Ray Data actors of --manifest")
    for flag in ("video", "audio", "out"):
        local = storage.local_path(getattr(args, flag))  # a path or file:// URI; None for s3://, which Path() would fold
        if local is None:
            raise ConfigError(f"--{flag} {getattr(args, flag)}: one pair reads and writes local files; list s3:// pairs in a --manifest")
        setattr(args, flag, str(local))
    sigma, epistemic = (_beside(args.out, path, kind) for path, kind in ((args.uncertainty_video, "sigma"), (args.epistemic_video, "epistemic")))
    result = dub(args.video, args.audio, args.model, args.out, uncertainty_video=sigma, epistemic_video=epistemic, report=args.report,
                 device=args.device, overrides=args.overrides, overwrite=args.overwrite)
    summary = result["summary"]
    keys = ("frames", "frames_without_face", "low_confidence_frames", "codecs", "generate_fps")
    print(json.dumps({"output": args.out, "uncertainty_video": sigma, "epistemic_video": epistemic, "report": args.report,
                      **{k: summary[k] for k in keys}}))
    return 0


def _beside(out: str, path: str | None, kind: str) -> str | None:
    """A heat-map video's path: as given, or `<out without .mp4>.<kind>.mp4` for the flag without a path."""
    return str(Path(out).with_suffix("")) + f".{kind}.mp4" if path == BESIDE else path


def _generate_batch(args: argparse.Namespace) -> int:
    from julnet.batch import format_table, run_batch

    if args.video or args.audio or args.report:
        raise ConfigError("--manifest lists the pairs and writes <out>/<name>/report.json: drop --video, --audio and --report")
    if args.overwrite:
        raise ConfigError("--manifest resumes: a re-run skips the pairs already done and redoes the others; to redo a pair, delete its report.json")
    for flag, path, file in (("--uncertainty-video", args.uncertainty_video, "sigma.mp4"), ("--epistemic-video", args.epistemic_video, "epistemic.mp4")):
        if path not in (None, BESIDE):
            raise ConfigError(f"with --manifest, {flag} takes no path: {file} goes beside each pair's dubbed.mp4")
    # Unset flags take their defaults; an explicit 0 must stay 0 and be refused below, not become the default.
    workers = 1 if args.workers is None else args.workers
    cpus = 1.0 if args.cpus_per_worker is None else args.cpus_per_worker
    gpus = 0.0 if args.gpus_per_worker is None else args.gpus_per_worker
    if workers < 1 or cpus <= 0 or gpus < 0:
        raise ConfigError("--workers must be at least 1, --cpus-per-worker positive and --gpus-per-worker not negative")
    if args.device == "cuda" and gpus == 0:
        raise ConfigError("--device cuda needs --gpus-per-worker > 0")
    result = run_batch(args.manifest, args.out, args.model, overrides=args.overrides, uncertainty_video=args.uncertainty_video is not None,
                       epistemic_video=args.epistemic_video is not None, workers=workers, cpus_per_worker=cpus, gpus_per_worker=gpus, device=args.device)
    print(format_table(result))
    return 1 if result.failed else 0


def _register(args: argparse.Namespace) -> None:
    from julnet.registry import register_run
    from julnet.tracking import client, resolve_tracking_uri

    cfg = load_config(args.config, args.overrides)
    version = register_run(client(resolve_tracking_uri(cfg.tracking.uri)), args.run, cfg.promotion.model_name, args.alias or None)
    print(json.dumps({"model": f"models:/{version.name}/{version.version}", "alias": args.alias or None, "tags": version.tags}, indent=1))


def _promote(args: argparse.Namespace) -> int:
    from julnet.promotion import format_decision, run_promotion

    cfg = load_config(args.config, args.overrides)
    decision = run_promotion(cfg, args.data, args.version, args.run, args.device)
    print(format_decision(decision))
    if args.out:
        storage.write_text(args.out, json.dumps(decision.to_dict(), indent=1))
    return 0


def _retrain(args: argparse.Namespace) -> None:
    """The retraining chain in this process, its heavy steps on Ray (julnet.retrain); the outcome as a JSON line."""
    from julnet.retrain import Plan, retrain

    plan = Plan(args.raw, args.dataset, args.storage, args.name, args.config, tuple(args.overrides), tuple(args.promotion),
                args.syncnet_steps, args.eval_gpus)
    print(json.dumps(retrain(plan, main, args.force)))


def _evaluate(args: argparse.Namespace) -> None:
    """In this process, or with --ray in one Ray task (ray_jobs/evaluate.py); the table, then a JSON summary line."""
    from julnet.evaluation.publish import log_to_mlflow, result_files, save_result
    from julnet.evaluation.result import format_table
    from julnet.evaluation.suite import evaluate_with_config
    from julnet.paths import check_outputs, output_folders
    from julnet.tracking import resolve_tracking_uri

    work = (args.model, args.data, args.config, args.overrides, args.device)
    writes = result_files(args.out) if args.out else {}
    check_outputs({"data manifest": args.data, "model": args.model}, writes, args.overwrite)  # before any work
    with output_folders(writes):
        if args.ray:
            from julnet.data.manifest import read_manifest

            if args.config:
                load_config(args.config, args.overrides)
            read_manifest(args.data)  # bad settings or data fail here, before Ray starts
            connect_ray()
            settings, result = ray_task(evaluate_with_config, work, args.cpus_per_task, 1.0 if args.device == "cuda" else 0.0)
        else:
            settings, result = evaluate_with_config(*work)
        print(format_table(result))
        summary: dict[str, Any] = {"result": args.out, "metrics": result.metrics}
        if args.out:
            summary["plot"] = save_result(result, args.out)
    if args.tracking_run or args.log:
        uri = resolve_tracking_uri(settings.tracking.uri)
        summary["mlflow_run"] = log_to_mlflow(result, uri, run_id=args.tracking_run, experiment=settings.tracking.experiment)
    print(json.dumps(summary))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="julnet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="parameter counts and GFLOPs per module, as JSON")
    add_config_args(info)
    info.set_defaults(handler=_info)

    train = sub.add_parser(
        "train", help="train one stage in this process (--out), or the whole curriculum on Ray Train workers (--name)",
        description="--out trains one stage in this process into a folder. --name trains the curriculum in train.stages on "
        "Ray Train workers (the cluster RAY_ADDRESS names, else a local one), tracked in MLflow; the same --name and "
        "--storage resume. ray_jobs/train.py is this command with --name.",
    )
    add_config_args(train)
    where = train.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", default=None, help="train in this process: run directory (checkpoints, metrics), resumed if it has one")
    where.add_argument("--name", default=None, help="train on Ray Train workers: the run's name (and MLflow run name)")
    train.add_argument("--data", default=None, metavar="MANIFEST_URI", help="dataset manifest URI (from julnet preprocess)")
    train.add_argument("--storage", default=None, help="with --name: where the run keeps its checkpoints, a folder or s3:// prefix")
    train.add_argument("--stages", default=None, help="with --name: comma-separated stage names (default: all, in order)")
    train.add_argument("--synthetic", action="store_true", help="with --out: train on generated faces (no data needed)")
    train.add_argument("--stage", default=None, help="with --out: stage name from train.stages (default: the first)")
    train.add_argument("--steps", type=int, default=None, help="with --out: override the stage's step count")
    train.add_argument("--init", default=None, help="warm-start the networks from this checkpoint (with --name also s3://, runs:/, models:/)")
    train.set_defaults(handler=_train)

    sync = sub.add_parser(
        "train-syncnet", help="pre-train the SyncNet of the sync loss (eq. 13) on in-sync and shifted pairs",
        description="Pre-train the SyncNet. --out trains in this process into a folder; --name trains in a Ray task "
        "(RAY_ADDRESS's cluster, else a local one), logs the MLflow run NAME and registers the weights as --model-name.",
    )
    add_config_args(sync)
    where = sync.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", default=None, help="train in this process; output directory (syncnet.pt, metrics.json)")
    where.add_argument("--name", default=None, help="train in a Ray task, as the MLflow run NAME, and register the weights")
    sync.add_argument("--synthetic", action="store_true", help="train on generated faces (no data needed; with --out)")
    sync.add_argument("--data", default=None, metavar="MANIFEST_URI", help="dataset manifest.json (path, file:// or s3://)")
    sync.add_argument("--steps", type=int, required=True, help="training steps")
    sync.add_argument("--model-name", default="julnet-syncnet", help="registered model name (with --name)")
    sync.set_defaults(handler=_train_syncnet)

    tune = sub.add_parser(
        "tune", help="sweep loss weights and histogram settings with Ray Tune (ASHA + Optuna), tracked in MLflow",
        description="Sweep the config's `sweep` section with Ray Tune. Always on Ray: the cluster RAY_ADDRESS names "
        "(or the job's), else a local one. Rerunning the same --name and --storage resumes the sweep.",
    )
    add_config_args(tune)
    add_run_args(tune, "sweep")
    tune.set_defaults(handler=_tune)

    pre = sub.add_parser(
        "preprocess", help="turn raw videos into training shards, a manifest and a report",
        description="Preprocess videos into shards; a re-run resumes. Shards run in --workers local processes, or with "
        "--ray as Ray tasks on the cluster RAY_ADDRESS names (else a local one); ray_jobs/preprocess.py is --ray.",
    )
    add_config_args(pre)
    pre.add_argument("--input", required=True, help="folder, s3:// prefix, or .jsonl listing of videos")
    pre.add_argument("--output", required=True, help="dataset folder or s3:// prefix (manifest.json, shards/, report.json)")
    pre.add_argument("--workers", type=int, default=1, help="local worker processes (without --ray)")
    pre.add_argument("--ray", action="store_true", help="run each shard as a Ray task instead of in local processes")
    pre.add_argument("--cpus-per-task", type=float, default=1.0, help="CPUs of each shard's Ray task (with --ray)")
    pre.add_argument("--overwrite", action="store_true", help="replace a dataset of another input at --output (one of this input is resumed)")
    pre.set_defaults(handler=_preprocess)

    gen = sub.add_parser(
        "generate", help="dub a video with a speech clip in this process (--video), or a manifest of pairs on Ray Data (--manifest)",
        description="--video and --audio dub one video in this process, with a per-frame confidence report. --manifest dubs "
        "every pair of a JSON Lines manifest on Ray Data actors (the cluster RAY_ADDRESS names, else a local one) into "
        "<out>/<name>/; re-running resumes. ray_jobs/generate.py is this command.",
    )
    gen.add_argument("--video", default=None, help="video of the person (anything PyAV decodes)")
    gen.add_argument("--audio", default=None, help="speech: an audio file or a video with an audio track")
    gen.add_argument("--manifest", default=None, help="JSON Lines of pairs {video, audio, name?}: path, file:// or s3:// URI")
    gen.add_argument("--model", required=True, help="models:/name@alias or models:/name/N, runs:/ID/model, s3:// or local checkpoint, run directory or state.pt")
    gen.add_argument("--out", required=True, help="output MP4 (25 fps, the source's size, the new audio); with --manifest a folder or s3:// prefix")
    gen.add_argument(
        "--uncertainty-video", nargs="?", const=BESIDE, default=None, metavar="PATH",
        help="also write the sigma map as a heat map over the frames (without PATH: beside the output)",
    )
    gen.add_argument(
        "--epistemic-samples", type=int, default=None, metavar="K",
        help="epistemic map: the generator re-run on K reference sets (K - 1 extra passes; the report gains epistemic_mean); "
        "same as --set generate.epistemic_samples=K (default 0: off)",
    )
    gen.add_argument(
        "--epistemic-video", nargs="?", const=BESIDE, default=None, metavar="PATH",
        help="also write the epistemic map as a heat map over the frames (needs --epistemic-samples; without PATH: beside the output)",
    )
    gen.add_argument("--report", default=None, help="per-frame confidence report (JSON); with --manifest always <out>/<name>/report.json")
    gen.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the networks run")
    gen.add_argument("--overwrite", action="store_true", help="replace outputs that exist (never an input: no output may be an input)")
    gen.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="generate.KEY=VALUE",
        help="override a setting of the model config's generate section, e.g. generate.batch_frames=8",
    )
    gen.add_argument("--workers", type=int, default=None, help="with --manifest: Ray Data actors, each holding the model once (default 1)")
    gen.add_argument("--cpus-per-worker", type=float, default=None, help="with --manifest: CPUs of each actor (default 1)")
    gen.add_argument("--gpus-per-worker", type=float, default=None, help="with --manifest: GPUs of each actor (default 0)")
    gen.set_defaults(handler=_generate)

    reg = sub.add_parser("register", help="register a training run's model as a new version (with its lineage) and alias it")
    add_config_args(reg)
    reg.add_argument("--run", required=True, help="MLflow run id of the training run")
    reg.add_argument("--alias", default="challenger", help="alias to point at the new version ('' for none)")
    reg.set_defaults(handler=_register)

    pro = sub.add_parser("promote", help="evaluate challenger and champion on held-out data; move @champion if the policy says so")
    add_config_args(pro)
    which = pro.add_mutually_exclusive_group()
    which.add_argument("--run", default=None, help="register this training run first and make it the challenger")
    which.add_argument("--version", default=None, help="the challenger's version (default: the @challenger alias)")
    pro.add_argument("--data", default=None, help="manifest URI of the held-out data (default: the challenger's training data)")
    pro.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    pro.add_argument("--out", default=None, help="also write the decision as JSON here")
    pro.set_defaults(handler=_promote)

    ev = sub.add_parser(
        "evaluate", help="measure a model on a dataset's held-out split: PSNR, LPIPS, FID, LSE, calibration",
        description="Evaluate in this process, or with --ray in one Ray task (the cluster RAY_ADDRESS names, else a local "
        "one; with --device cuda the task takes a GPU). ray_jobs/evaluate.py is this command with --ray.",
    )
    ev.add_argument(
        "--model", required=True,
        help="run directory, checkpoint directory or state.pt, a models:/ or runs:/ URI, or a floor row: baseline:reference-copy, baseline:untrained (with --config)",
    )
    ev.add_argument("--data", required=True, metavar="MANIFEST_URI", help="dataset manifest.json (path, file:// or s3://)")
    ev.add_argument("--config", default=None, help="preset or YAML for the evaluation settings (default: the model's own config)")
    ev.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. evaluation.max_frames=500"
    )
    ev.add_argument("--out", default=None, metavar="URI", help="write the result as JSON here (its sparsification plot goes beside it)")
    ev.add_argument("--overwrite", action="store_true", help="replace the result and plots if they exist")
    ev.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where the networks run")
    ev.add_argument("--ray", action="store_true", help="run the evaluation as one Ray task instead of in this process")
    ev.add_argument("--cpus-per-task", type=float, default=1.0, help="CPUs of the Ray task (with --ray)")
    tracking = ev.add_mutually_exclusive_group()
    tracking.add_argument("--tracking-run", default=None, metavar="RUN_ID", help="log the metrics (eval_*) and artifacts onto this MLflow run")
    tracking.add_argument("--log", action="store_true", help="log to a linked MLflow evaluation run")
    ev.set_defaults(handler=_evaluate)

    re_ = sub.add_parser(
        "retrain", help="check for new data, then preprocess, train, evaluate, register and promote: the whole retraining chain",
        description="Retraining as one chain: check for new data -> preprocess -> (pre-train the SyncNet) -> train -> evaluate "
        "-> register -> promote, each step the julnet command its Ray job runs, on the cluster RAY_ADDRESS names (else a local "
        "one). With nothing new under --raw and no --force it stops after the check and says why. The same --name on the same "
        "data and config resumes. ray_jobs/retrain.py is this command; the Kubeflow pipeline runs the same steps.",
    )
    add_config_args(re_)
    re_.add_argument("--raw", required=True, help="raw videos: a folder or s3:// prefix (or a .jsonl listing)")
    re_.add_argument("--dataset", required=True, help="where the preprocessed dataset goes (folder or s3:// prefix)")
    re_.add_argument("--storage", required=True, help="where training runs keep checkpoints and evaluations")
    re_.add_argument("--name", required=True, help="run name prefix; the same name on the same data and config resumes")
    re_.add_argument("--promotion-set", dest="promotion", action="append", default=[], metavar="promotion.KEY=VALUE",
                     help="promotion policy override (e.g. promotion.margin=0.1), for the promote step only")
    re_.add_argument("--syncnet-steps", type=int, default=0, help="pre-train a SyncNet this many steps first (0: use the config's)")
    re_.add_argument("--eval-gpus", type=float, default=0.0, help="GPUs for evaluation and promotion (CUDA when > 0)")
    re_.add_argument("--force", action="store_true", help="retrain even when the raw data is what the champion was trained on")
    re_.set_defaults(handler=_retrain)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one `julnet` sub-command; 2 with a one-line error for bad input."""
    args = build_parser().parse_args(argv)
    setup_logging(logging.INFO)
    try:
        return args.handler(args) or 0
    except (ConfigError, MissingWeightsError, ValueError, GenerateError, RegistryError, StepError, FloatingPointError) as exc:
        # FloatingPointError: training.step.NonFiniteLossError, a loss went NaN and the last good checkpoint is kept
        print(f"julnet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        message = user_error(exc)  # an unknown run or model, a missing bucket, wrong credentials: one line, not a traceback
        if message is None:
            raise
        print(f"julnet {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
