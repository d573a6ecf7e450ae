from __future__ import annotations

import json

from tests.conftest import run_cli


def test_info_paper_reports_a_dinet_sized_generator():
    info = json.loads(run_cli("info", "--config", "paper").stdout)
    assert info["resolution"] == [320, 416]  # width, height
    params = info["params"]
    assert abs(params["generator"] - 19.2e6) / 19.2e6 < 0.05, params["generator"]
    assert sum(params["generator_parts"].values()) == params["generator"]
    assert abs(params["frame_discriminator"] - 2.6e6) / 2.6e6 < 0.15
    # DINet's 358.7 (stride-2 down-blocks) less 27.0 for the two up-blocks' 3x3 convolutions run as sub-pixel 2x2 ones
    assert abs(info["gflops"]["generator"] - 331.7) / 331.7 < 0.005, info["gflops"]["generator"]
    assert params["vgg"] == 12944960, "VGG-19 up to relu5_1"


def test_info_tiny_is_much_smaller():
    tiny = json.loads(run_cli("info", "--config", "tiny").stdout)
    assert tiny["resolution"] == [80, 104]
    assert tiny["params"]["generator"] < 2e6 and tiny["gflops"]["generator"] < 5


def test_train_synthetic_leaves_a_checkpoint_and_metrics(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("train", "--config", "tiny", "--synthetic", "--steps", "3", "--out", str(out), "--set", "train.log_every=1")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["step"] == 3
    assert (out / "checkpoints" / "step-00000003" / "state.pt").is_file()
    assert (out / "config.yaml").is_file()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    assert "it/s" in proc.stderr and "eta" in proc.stderr and "RANDOM weights" in proc.stderr


def test_train_without_data_says_what_to_pass(tmp_path):
    proc = run_cli("train", "--config", "tiny", "--steps", "1", "--out", str(tmp_path / "x"), check=False)
    assert proc.returncode == 2 and "--synthetic" in proc.stderr


def test_paper_training_without_pretrained_weights_fails_clearly(tmp_path):
    proc = run_cli("train", "--config", "paper", "--synthetic", "--steps", "1", "--out", str(tmp_path / "x"), check=False)
    assert proc.returncode == 2
    assert "perceptual.vgg.path" in proc.stderr and "Traceback" not in proc.stderr


def test_train_on_real_shards(tmp_path, grid_dataset):
    out = tmp_path / "real"
    proc = run_cli("train", "--config", "tiny", "--data", grid_dataset, "--steps", "2", "--out", str(out), "--set", "train.stages.0.batch_size=2")
    assert json.loads(proc.stdout.strip().splitlines()[-1])["step"] == 2
    assert (out / "checkpoints" / "step-00000002" / "state.pt").is_file()


def test_run_options_never_replace_the_sub_commands_handler():
    """`julnet promote --run ID` and `julnet register --run ID` once crashed: `--run` overwrote the handler."""
    from julnet.cli import _promote, _register, build_parser

    for argv, handler in ((["promote", "--run", "abc"], _promote), (["register", "--run", "abc"], _register)):
        args = build_parser().parse_args(argv)
        assert args.handler is handler and args.run == "abc"


def test_the_flag_that_says_where_a_stage_runs_rejects_the_other_doors_flags(tmp_path, capsys):
    """--out/--video run here, --name/--manifest/--ray on Ray: a flag of the other door fails in one line, before any work."""
    from julnet.cli import main

    cases = [
        (["train", "--out", str(tmp_path / "a"), "--synthetic", "--storage", str(tmp_path)], "use them with --name, not --out"),
        (["train", "--name", "r", "--data", str(tmp_path / "m.json")], "needs --data MANIFEST_URI and --storage"),
        (["train", "--name", "r", "--data", "m", "--storage", str(tmp_path), "--steps", "2"], "use them with --out, not --name"),
        (["generate", "--model", "m", "--out", str(tmp_path / "o.mp4")], "pass --video and --audio"),
        (["generate", "--video", "v", "--audio", "a", "--model", "m", "--out", "o.mp4", "--workers", "2"], "size the Ray Data actors"),
        (["generate", "--manifest", "p.jsonl", "--model", "m", "--out", "o", "--uncertainty-video", "s.mp4"], "takes no path"),
        (["generate", "--manifest", "p.jsonl", "--model", "m", "--out", "o", "--epistemic-video", "e.mp4"], "--epistemic-video takes no path"),
        (["generate", "--manifest", "p.jsonl", "--model", "m", "--out", "o", "--workers", "0"], "--workers must be at least 1"),
        (["generate", "--manifest", "p.jsonl", "--model", "m", "--out", "o", "--cpus-per-worker", "0"], "--cpus-per-worker positive"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)
    assert list(tmp_path.iterdir()) == []
