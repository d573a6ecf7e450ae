"""The `julnet` command: one entry point per ML stage, all sharing --config and --set."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from julnet.config import ConfigError, load_config
from julnet.errors import GenerateError, MissingWeightsError


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="tiny", help="preset name (paper, tiny) or YAML path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. hist.bins=9")


def _info(args: argparse.Namespace) -> None:
    from julnet.info import model_info

    print(json.dumps(model_info(load_config(args.config, args.overrides)), indent=2))


def _train(args: argparse.Namespace) -> None:
    from julnet.data.loader import StepBatches
    from julnet.data.synthetic import SyntheticFaces
    from julnet.training.loop import train_stage

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
        batches = StepBatches(args.data, stage, cfg.generator.num_references, cfg.audio.window, cfg.train.seed)
    else:
        batches = SyntheticFaces(cfg, stage, seed=cfg.train.seed).batch
    result = train_stage(cfg, Path(args.out), batches, stage, init=Path(args.init) if args.init else None)
    print(json.dumps({"step": result.step, "checkpoint": str(result.checkpoint), "metrics": result.metrics}))


def _train_syncnet(args: argparse.Namespace) -> None:
    from julnet.training.syncnet import clip_stage, manifest_sources, synthetic_sources, train_syncnet

    if args.synthetic == (args.data is not None):
        raise ConfigError("pass exactly one of --synthetic and --data MANIFEST_URI")
    cfg = load_config(args.config, args.overrides)
    stage = clip_stage(cfg)
    train, heldout, source = synthetic_sources(cfg, stage) if args.synthetic else manifest_sources(cfg, stage, args.data)
    metrics = train_syncnet(cfg, train, heldout, args.steps, Path(args.out), cfg.train.log_every, heldout=source)
    print(json.dumps({"weights": metrics["weights"], "heldout": metrics["heldout"], "eval": metrics["eval"]}))


def _preprocess(args: argparse.Namespace) -> int:
    from julnet.data.preprocess import run

    cfg = load_config(args.config, args.overrides)
    mapper = map
    if args.workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(args.workers)
        mapper = pool.map
    manifest, report = run(args.input, args.output, cfg, mapper)
    reasons: dict[str, int] = {}
    for rejection in report.rejected:
        reasons[rejection.reason] = reasons.get(rejection.reason, 0) + 1
    frames = sum(v.frames for v in manifest.videos)
    print(json.dumps({"manifest": f"{args.output.rstrip('/')}/manifest.json", "accepted": report.accepted, "frames": frames, "rejected": reasons}))
    if report.accepted == 0:
        print("julnet preprocess: error: no usable video came out (see report.json)", file=sys.stderr)
        return 1
    return 0


def _generate(args: argparse.Namespace) -> None:
    from julnet.inference import dub

    result = dub(
        args.video,
        args.audio,
        args.model,
        args.out,
        uncertainty_video=args.uncertainty_video,
        report=args.report,
        device=args.device,
        overrides=args.overrides,
    )
    summary = result["summary"]
    keys = ("frames", "frames_without_face", "low_confidence_frames", "codecs", "generate_fps")
    print(json.dumps({"output": args.out, "uncertainty_video": args.uncertainty_video, "report": args.report, **{k: summary[k] for k in keys}}))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="julnet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="parameter counts and GFLOPs per module, as JSON")
    _config_args(info)
    info.set_defaults(run=_info)

    train = sub.add_parser("train", help="train one stage in this process")
    _config_args(train)
    train.add_argument("--out", required=True, help="run directory (checkpoints, metrics); resumed if it has a checkpoint")
    train.add_argument("--data", default=None, help="dataset manifest URI (from julnet preprocess)")
    train.add_argument("--synthetic", action="store_true", help="train on generated faces (no data needed)")
    train.add_argument("--stage", default=None, help="stage name from train.stages (default: the first)")
    train.add_argument("--steps", type=int, default=None, help="override the stage's step count")
    train.add_argument("--init", default=None, help="warm-start the networks from this checkpoint")
    train.set_defaults(run=_train)

    sync = sub.add_parser("train-syncnet", help="pre-train the SyncNet of the sync loss (eq. 13) on in-sync and shifted pairs")
    _config_args(sync)
    sync.add_argument("--out", required=True, help="output directory (syncnet.pt, metrics.json)")
    sync.add_argument("--synthetic", action="store_true", help="train on generated faces (no data needed)")
    sync.add_argument("--data", default=None, metavar="MANIFEST_URI", help="dataset manifest.json (path, file:// or s3://)")
    sync.add_argument("--steps", type=int, required=True, help="training steps")
    sync.set_defaults(run=_train_syncnet)

    pre = sub.add_parser("preprocess", help="turn raw videos into training shards, a manifest and a report")
    _config_args(pre)
    pre.add_argument("--input", required=True, help="folder, s3:// prefix, or .jsonl listing of videos")
    pre.add_argument("--output", required=True, help="dataset folder or s3:// prefix (manifest.json, shards/, report.json)")
    pre.add_argument("--workers", type=int, default=1, help="local worker processes")
    pre.set_defaults(run=_preprocess)

    gen = sub.add_parser("generate", help="dub a video with a speech clip, with a per-frame confidence report")
    gen.add_argument("--video", required=True, help="video of the person (anything PyAV decodes)")
    gen.add_argument("--audio", required=True, help="speech: an audio file or a video with an audio track")
    gen.add_argument("--model", required=True, help="run directory (newest checkpoint), checkpoint directory or state.pt")
    gen.add_argument("--out", required=True, help="output MP4 (25 fps, the source's size, the new audio)")
    gen.add_argument("--uncertainty-video", default=None, help="also write the sigma map as a heat map over the frames")
    gen.add_argument("--report", default=None, help="per-frame confidence report (JSON)")
    gen.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the networks run")
    gen.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="generate.KEY=VALUE",
        help="override a setting of the model config's generate section, e.g. generate.batch_frames=8",
    )
    gen.set_defaults(run=_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.run(args) or 0
    except (ConfigError, MissingWeightsError, FileNotFoundError, ValueError, GenerateError) as exc:
        print(f"julnet {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
