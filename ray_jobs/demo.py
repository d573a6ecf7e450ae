"""`make demo`: the whole pipeline on this machine, on the GRID sample clips shipped in examples/grid.

A local Ray (loopback only), a local MLflow (sqlite under runs/demo), a local folder for the buckets:
preprocess -> pre-train the SyncNet -> train the tiny preset on 2 workers (frame stage, then the clip
stage with the sync loss) -> evaluate on the held-out split, register and promote -> dub one clip with
another clip's audio with the champion. Re-running skips the preprocessing; it pre-trains a new SyncNet
version and trains a new run (seeded: the same weights again), which meets the first as challenger.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

if not __package__:  # run as `python ray_jobs/demo.py` from a checkout: make julnet importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "runs" / "demo"


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)), flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Step counts (the defaults are the demo; smaller ones make a smoke run of the same pipeline)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frame-steps", type=int, default=240, help="frame-stage training steps")
    parser.add_argument("--clip-steps", type=int, default=30, help="clip-stage training steps (clip discriminator, sync loss)")
    parser.add_argument("--syncnet-steps", type=int, default=150, help="SyncNet pre-training steps")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # keep Ray on 127.0.0.1
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{OUT / 'mlflow.db'}"  # the embedded default, whatever the shell says
    OUT.mkdir(parents=True, exist_ok=True)
    sys.stdout.reconfigure(line_buffering=True)  # the demo's lines in order with the log lines when piped to a file
    from julnet.progress import ray_runtime_env, setup_logging

    # julnet's progress lines, other libraries' warnings only; Ray Data's progress bars off unless on a terminal
    setup_logging(logging.INFO, others=logging.WARNING)
    import ray
    from julnet import tracking

    from julnet.cluster import ray_mapper
    from julnet.registry import pretrain_and_register
    from julnet.config import load_config
    from julnet.data.preprocess import run as preprocess
    from julnet.evaluation.result import EvaluationResult, format_table
    from julnet.inference import dub, load_model
    from julnet.promotion import EVAL_TAG_PREFIX, format_decision, run_promotion
    from julnet.training.distributed import train_run

    start = time.perf_counter()
    # The dashboard's API server (on 127.0.0.1) stays on: Ray Train's placement-group cleaner asks it every
    # second whether the run's controller is alive, and logs "Failed to query Ray Train Controller actor state"
    # each time it cannot. Workers: julnet's progress lines, bars off, this cluster's address (ray_runtime_env).
    os.environ.pop("RAY_ADDRESS", None)  # the demo runs its own local Ray, whatever cluster this shell points at
    ray.init(address="local", num_cpus=2, log_to_driver=True, runtime_env=ray_runtime_env(), _temp_dir=str(Path("/tmp") / f"julnet-demo-ray-{os.getuid()}"))
    banner("1/5 preprocess the GRID sample clips")
    cfg = load_config("tiny")
    manifest, report = preprocess(str(ROOT / "examples" / "grid"), str(OUT / "data"), cfg, ray_mapper(1.0))
    print(f"{report.accepted} videos, {sum(v.frames for v in manifest.videos)} frames")
    for rejection in report.rejected:
        print(f"rejected {Path(rejection.source).name}: {rejection.reason}")
    data = str(OUT / "data" / "manifest.json")

    banner(f"2/5 pre-train the SyncNet ({args.syncnet_steps} steps)")
    syncnet = pretrain_and_register(load_config("tiny", ["train.log_every=25"]), data, "demo-syncnet", args.syncnet_steps, "julnet-syncnet")
    print(f"registered {syncnet['model']}: held-out sync accuracy {syncnet['sync_accuracy']:.3f} ({syncnet['heldout']})")

    banner(f"3/5 train the tiny preset on 2 workers ({args.frame_steps} frame + {args.clip_steps} clip steps)")
    version = syncnet["model"].rsplit("/", 1)[-1]
    train_cfg = load_config("tiny", [
        f"train.stages.0.steps={args.frame_steps}", "train.stages.0.batch_size=2", f"train.stages.1.steps={args.clip_steps}",
        "train.checkpoint_every=60",
        "train.log_every=10", "tracking.image_every=60", f"syncnet.weights.path={syncnet['model']}",
    ])
    result = train_run(train_cfg, data, str(OUT / "runs"), f"demo-tiny-syncnet{version}")

    client = tracking.client(result["tracking_uri"])
    history = client.get_metric_history(result["run_id"], "mouth_l1")
    first, last = history[0].value, history[-1].value
    artifacts = client.get_run(result["run_id"]).info.artifact_uri
    print(f"mouth-region L1 error: {first:.4f} at step {history[0].step} -> {last:.4f} at step {history[-1].step}")

    banner("4/5 evaluate on the held-out split, register, promote")
    decision = run_promotion(train_cfg, data, run_id=result["run_id"])
    stored = client.get_model_version(decision.model_name, decision.challenger).tags
    for tag in sorted(t for t in stored if t.startswith(EVAL_TAG_PREFIX)):
        print(format_table(EvaluationResult.from_dict(json.loads(stored[tag]))))
    print(format_decision(decision))

    banner("5/5 dub a clip with another clip's audio, with the champion")
    clips = sorted((ROOT / "examples" / "grid").glob("*.mpg"))
    champion = f"models:/{decision.model_name}@champion"
    dubbed, heat, report = OUT / "dubbed.mp4", OUT / "dubbed.uncertainty.mp4", OUT / "dubbed.json"
    summary = dub(clips[0], clips[1], load_model(champion, folded=True), dubbed, uncertainty_video=heat, report=report,
                  overwrite=True)["summary"]  # the demo's own folder: a re-run replaces its outputs
    print(f"{clips[0].name} with the voice of {clips[1].name}: {summary['frames']} frames, "
          f"{summary['low_confidence_frames']} flagged low-confidence, mean confidence {summary['confidence']['mean']:.3f}")

    banner(f"done in {time.perf_counter() - start:.0f} s")
    print(f"MLflow run:      {result['run_id']}  (mlflow ui --backend-store-uri {result['tracking_uri']})")
    print(f"sample grids:    {artifacts}/samples/")
    print(f"loss curves:     {result['storage']}/loss_curves.png")
    print(f"champion:        {champion} = version {decision.champion_after}")
    print(f"dubbed video:    {dubbed}")
    print(f"heat-map video:  {heat}")
    print(f"report:          {report}")
    ray.shutdown()
    return 0 if last < first else 1


if __name__ == "__main__":
    sys.exit(main())
