"""Scheduled retraining as one chain (`julnet retrain`, julnet.retrain; ray_jobs/retrain.py runs it as a Ray job) and
what it shares with the pipeline: the raw-data fingerprint and the champion check (julnet.freshness), and the step
command lines (Plan).

The end-to-end test submits the job to the session's local Ray cluster with `ray job submit`, on three GRID sample
clips in the S3 test server, tracked in the session's MLflow server, then runs `julnet retrain` in a shell on the
same data: nothing new, it stops.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from julnet.config import DEFAULT_CONFIG, ConfigError
from julnet.freshness import check, fingerprint, raw_objects
from julnet.promotion import TAG_DECISION
from julnet.registry import TAG_RAW, TAG_RAW_FILES, TAG_RAW_SHA
from julnet.cli import build_parser
from julnet.retrain import Plan, error_line, last_json
from tests.conftest import REPO

RUN = "nightly"
CLIPS = ["bbaf2n.mpg", "brbk7n.mpg", "id2_vcd_swwp2s.mpg"]  # three videos: preprocessing then holds one out as test
# The tiny preset cut to a few steps of one stage, one worker: the chain, not the model, is under test.
FAST = [
    "train.stages=[{name: frame, kind: frame, height: 104, width: 80, batch_size: 2, steps: 4}]", "train.num_workers=1",
    "train.checkpoint_every=4", "train.log_every=2", "tracking.image_every=4", "evaluation.max_frames_per_video=8",
    "preprocess.val_fraction=0",
]


def shared_bucket(s3_server) -> str:
    """The session's bucket for end-to-end retraining, with the three GRID clips under raw/; its URI.

    The pipeline's and the job's end-to-end tests share it on purpose: the same raw data and config give the same
    run name, so whichever runs second resumes the first one's dataset and training run (as a resubmission would)
    and spends its time on what differs. Uploading the same bytes again keeps their ETags, so the data stays the same.
    """
    name = "julnet-retrain-e2e"
    if name not in {b["Name"] for b in s3_server.client.list_buckets()["Buckets"]}:
        s3_server.client.create_bucket(Bucket=name)
    for clip in CLIPS:
        s3_server.client.upload_file(str(REPO / "examples" / "grid" / clip), name, f"raw/{clip}")
    return f"s3://{name}"


def job_env(mlflow_uri: str) -> dict[str, str]:
    """What a submitted job needs from this shell: MLflow's address, and this venv's python first on PATH."""
    return {"MLFLOW_TRACKING_URI": mlflow_uri, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


# ---------------------------------------------------------------- the fingerprint


def test_the_fingerprint_lists_what_preprocessing_reads_and_changes_with_it(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("a.mpg", "a.csv", ".hidden", "sub/b.mpg"):
        (tmp_path / name).write_bytes(b"x" * 3)
    objects = raw_objects(str(tmp_path))
    assert [o.key for o in objects] == ["a.csv", "a.mpg", "sub/b.mpg"] and {o.size for o in objects} == {3}
    before = fingerprint(objects)
    assert fingerprint(raw_objects(tmp_path.as_uri())) == before, "a path and its file:// URI are the same data"
    os.utime(tmp_path / "a.mpg", ns=(1, 1))
    assert fingerprint(raw_objects(str(tmp_path))) != before, "a local file's modification time is its ETag"
    (tmp_path / "sub" / "c.mpg").write_bytes(b"y")
    assert len(raw_objects(str(tmp_path))) == 4
    with pytest.raises(FileNotFoundError, match="no raw files under"):
        raw_objects(str(tmp_path / "nothing"))


def test_an_s3_prefix_is_fingerprinted_by_relative_keys_sizes_and_etags(s3_server, s3_bucket: str) -> None:
    name = s3_bucket.removeprefix("s3://")
    for key, body in (("raw/a.mpg", b"aa"), ("raw/sub/b.mpg", b"b"), ("raw/.julnet-tmp-x", b"t"), ("rawer/c.mpg", b"c"),
                      ("copy/a.mpg", b"aa"), ("copy/sub/b.mpg", b"b")):
        s3_server.client.put_object(Bucket=name, Key=key, Body=body)
    objects = raw_objects(f"{s3_bucket}/raw/")
    assert [(o.key, o.size) for o in objects] == [("a.mpg", 2), ("sub/b.mpg", 1)] and all(o.etag for o in objects)
    assert fingerprint(objects) == fingerprint(raw_objects(f"{s3_bucket}/copy")), "the same files elsewhere are the same data"
    s3_server.client.put_object(Bucket=name, Key="raw/a.mpg", Body=b"ab")
    assert fingerprint(raw_objects(f"{s3_bucket}/raw")) != fingerprint(objects), "new content, same size: a new ETag"


def test_the_check_compares_with_the_champion_then_with_decided_versions(mlflow_server, tmp_path: Path) -> None:
    (tmp_path / "a.mpg").write_bytes(b"a")
    fp = fingerprint(raw_objects(str(tmp_path)))
    client = MlflowClient(mlflow_server.uri, registry_uri=mlflow_server.uri)
    name = f"fresh-{uuid.uuid4().hex[:6]}"
    first = check(client, name, str(tmp_path))
    assert first.new and "has no champion yet" in first.reason and first.fingerprint == fp and first.files == 1
    assert first.tags() == {TAG_RAW: str(tmp_path), TAG_RAW_SHA: fp, TAG_RAW_FILES: "1"}

    client.create_registered_model(name)
    run = client.create_run(client.create_experiment(name)).info

    def version(tags: dict[str, str]) -> str:
        return client.create_model_version(name, f"{run.artifact_uri}/model", run_id=run.run_id, tags=tags).version

    client.set_registered_model_alias(name, "champion", version({}))
    assert "records no raw fingerprint" in check(client, name, str(tmp_path)).reason
    client.set_registered_model_alias(name, "champion", version({TAG_RAW_SHA: "0" * 64, TAG_RAW: "s3://old", TAG_RAW_FILES: "7"}))
    assert "was trained on 7 files under s3://old" in check(client, name, str(tmp_path)).reason
    version({TAG_RAW_SHA: fp})  # registered by a run that died before promoting: the next run must go on
    assert check(client, name, str(tmp_path)).new
    tried = version({TAG_RAW_SHA: fp, TAG_DECISION: json.dumps({"promoted": False, "reason": "psnr_mouth: worse"})})
    stale = check(client, name, str(tmp_path))
    assert not stale.new and f"models:/{name}/{tried} was already trained on" in stale.reason and "psnr_mouth: worse" in stale.reason
    client.set_registered_model_alias(name, "champion", tried)
    assert check(client, name, str(tmp_path)).reason.startswith(f"no new data: the 1 files under {tmp_path}")


# ---------------------------------------------------------------- the plan: one command line per step


def test_the_plan_builds_each_steps_command_line_once() -> None:
    plan = Plan("s3://raw/x", "s3://data/x/", "s3://runs", "nightly", "tiny", ("hist.bins=9",), ("promotion.margin=0.1",), 0, 1.0)
    run = plan.run_name("ab" * 32)
    assert run.startswith("nightly-") and run == plan.run_name("ab" * 32) != plan.run_name("cd" * 32)
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    assert Plan.from_dict({**plan.to_dict(), "syncnet_steps": 5.0}).syncnet(run).argv[-3] == "5", "numbers come back from KFP as floats"
    other_policy = Plan("s3://raw/x", "s3://data/x/", "s3://runs", "nightly", "tiny", ("hist.bins=9",), ("promotion.margin=0.5",))
    assert other_policy.run_name("ab" * 32) == run, "the promotion policy is not part of what is trained"
    assert plan.manifest == "s3://data/x/manifest.json"
    assert plan.preprocess().command() == "python -m julnet preprocess --ray --config tiny --set hist.bins=9 --input s3://raw/x --output s3://data/x/"
    train = plan.train(run, "models:/julnet-syncnet/3").argv
    assert train[-6:] == ("--data", plan.manifest, "--storage", "s3://runs", "--name", run)
    assert "syncnet.weights.path=models:/julnet-syncnet/3" in train
    assert plan.evaluate(run, "RID").argv[:4] == ("evaluate", "--ray", "--model", "runs:/RID/model") and "--tracking-run" in plan.evaluate(run, "RID").argv
    promote = plan.promote("4")
    assert promote.argv[0] == "promote" and "promotion.margin=0.1" in promote.argv and promote.argv[-4:] == ("--data", plan.manifest, "--device", "cuda")
    for step in (plan.preprocess(), plan.syncnet(run), plan.train(run), plan.evaluate(run, "RID"), promote):
        build_parser().parse_args(list(step.argv))  # each step is a `julnet` command line as the CLI takes it
    # One default config for the chain, said once (julnet.config.DEFAULT_CONFIG): the plan, the command and the pipeline.
    compiled = next(yaml.safe_load_all((REPO / "pipelines" / "julnet_retrain.yaml").read_text()))
    assert (Plan("r", "d", "s", "n").config == build_parser().parse_args(["retrain", "--raw", "r", "--dataset", "d", "--storage", "s", "--name", "n"]).config
            == compiled["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"] == DEFAULT_CONFIG)
    with pytest.raises(ConfigError, match="promotion overrides must set promotion"):
        Plan("r", "d", "s", "n", "tiny", (), ("hist.bins=9",))
    with pytest.raises(ConfigError, match="unknown config key 'train.bogus'"):
        Plan("r", "d", "s", "n", "tiny", ("train.bogus=1",))
    plan.check_tracking(None)  # MLflow from the environment: nothing to compare
    pinned = Plan("r", "d", "s", "n", "tiny", ("tracking.uri=http://mlflow:5000",))
    pinned.check_tracking("http://mlflow:5000")
    with pytest.raises(ConfigError, match="tracking.uri is http://mlflow:5000 but the jobs' MLFLOW_TRACKING_URI is unset"):
        pinned.check_tracking(None)


def test_a_steps_result_and_error_come_from_its_output() -> None:
    out = 'INFO starting\n{"manifest": "s3://d/manifest.json"}\n{not json\n2026 INFO done\n'
    assert last_json(out) == {"manifest": "s3://d/manifest.json"} and last_json("no json") == {}
    trace = "Traceback (most recent call last):\n  ...\njulnet.config.ConfigError: unknown config key 'x'\n"
    assert error_line(trace) == "julnet.config.ConfigError: unknown config key 'x'"
    assert error_line("train: error: VGG-19 weights are not configured\n") == "train: error: VGG-19 weights are not configured"


# ---------------------------------------------------------------- the whole chain as one Ray job


@pytest.mark.slow
def test_the_retrain_job_runs_the_chain_on_ray_then_finds_nothing_new(ray_cluster, s3_server, mlflow_server) -> None:
    bucket = shared_bucket(s3_server)
    raw = f"{bucket}/raw"
    model = f"retrain-{uuid.uuid4().hex[:6]}"
    command = [
        str(Path(sys.executable).parent / "ray"), "job", "submit", "--working-dir", str(REPO),
        "--runtime-env-json", json.dumps({"env_vars": job_env(mlflow_server.uri)}), "--",
        "python", "ray_jobs/retrain.py", "--config", "tiny", "--raw", raw, "--dataset", f"{bucket}/data", "--storage", f"{bucket}/runs",
        "--name", RUN, *(a for o in FAST for a in ("--set", o)), "--promotion-set", f"promotion.model_name={model}",
    ]
    env = {**ray_cluster.env(), "RAY_AUTH_MODE": "token"}
    started = time.monotonic()
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    took = time.monotonic() - started
    assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-2000:]
    result = last_json(first.stdout)
    assert result["status"] == "promoted" and result["run"].startswith(f"{RUN}-"), result
    print(f"retrain job: {took:.0f} s for the whole chain")

    client = MlflowClient(mlflow_server.uri, registry_uri=mlflow_server.uri)
    champion = client.get_model_version_by_alias(model, "champion")
    assert champion.version == result["version"] and champion.tags[TAG_RAW] == raw
    assert champion.tags[TAG_RAW_SHA] == fingerprint(raw_objects(raw)) and champion.tags[TAG_RAW_FILES] == "3"
    assert "eval_psnr_mouth" in client.get_run(result["run_id"]).data.metrics, "the evaluate step logged onto the training run"

    julnet = str(Path(sys.executable).parent / "julnet")  # the same chain from a shell: it stops after the check
    again = subprocess.run([julnet, "retrain", *command[command.index("ray_jobs/retrain.py") + 1:]], env={**env, **job_env(mlflow_server.uri)},
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert last_json(again.stdout)["status"] == "no_new_data"
    assert len(client.search_model_versions(f"name='{model}'")) == 1
