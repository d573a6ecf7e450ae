"""The training step's device settings: precision selection, metrics read in bulk, the deferred finite check,
the compile fallback, pinned collation and the loop's per-step metric lines (issue 15, issue 13 item 5)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from julnet.config import Config, ConfigError, load_config
from julnet.data.loader import _stack_into_new
from julnet.data.synthetic import SyntheticFaces
from julnet.models.build import build_models, build_optimizers
from julnet.training.loop import train_stage
from julnet.training.step import NonFiniteLossError, TrainStep, select_precision

CPU = torch.device("cpu")


def _small(cfg: Config) -> Config:
    """The tiny preset at 80x64, batch 1 (smaller leaves the ID encoder's last batch norm 1x1: its down-blocks stride)."""
    cfg = cfg.model_copy(deep=True)
    for stage in cfg.train.stages:
        stage.height, stage.width, stage.batch_size = 80, 64, 1
    return cfg


def _trainer(cfg: Config, **kwargs) -> tuple:
    models = build_models(cfg)
    optimizers = build_optimizers(cfg, models)
    models.train()
    return models, optimizers, TrainStep(cfg, models, optimizers, CPU, **kwargs)


@pytest.mark.parametrize(
    ("precision", "device", "bf16", "expected"),
    [
        ("auto", "cuda", True, (torch.bfloat16, False)),
        ("auto", "cuda", False, (torch.float16, True)),
        ("auto", "cpu", False, (torch.float32, False)),
        ("bf16", "cuda", True, (torch.bfloat16, False)),
        ("fp16", "cuda", True, (torch.float16, True)),
        ("fp16", "cuda", False, (torch.float16, True)),
        ("fp32", "cuda", True, (torch.float32, False)),
        ("fp32", "cpu", False, (torch.float32, False)),
    ],
)
def test_precision_selection(precision: str, device: str, bf16: bool, expected: tuple):
    assert select_precision(precision, device, bf16) == expected


@pytest.mark.parametrize(("precision", "device", "bf16"), [("bf16", "cuda", False), ("bf16", "cpu", False), ("fp16", "cpu", False)])
def test_unsupported_precision_is_a_one_line_config_error(precision: str, device: str, bf16: bool):
    with pytest.raises(ConfigError, match=f"train.precision={precision}") as info:
        select_precision(precision, device, bf16)
    assert "\n" not in str(info.value)


def test_the_old_amp_key_still_reads():
    assert load_config("tiny", ["train.amp=true"]).train.precision == "auto"
    assert load_config("tiny", ["train.amp=false"]).train.precision == "fp32"
    data = load_config("paper").to_dict()
    del data["train"]["precision"]
    data["train"]["amp"] = True
    cfg = Config.model_validate(data)
    assert cfg.train.precision == "auto" and not any(k.endswith(".amp") for k in cfg.flat())


@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16", "fp16"])
def test_one_cpu_step_with_each_precision(tiny: Config, precision: str):
    cfg = _small(tiny)
    cfg.train.precision = precision
    if precision in ("bf16", "fp16"):
        with pytest.raises(ConfigError, match="needs CUDA"):
            _trainer(cfg)
        return
    _, _, step = _trainer(cfg)
    assert step.precision == "fp32" and not step.scaler.is_enabled() and not step.deferred
    assert step.memory_format == torch.contiguous_format  # channels_last is CUDA only
    metrics = step(SyntheticFaces(cfg, cfg.train.stages[0]).batch(0), "frame")
    assert all(isinstance(v, float) for v in metrics.values()) and metrics["total"] == metrics["total"]


def test_metrics_read_in_bulk_equal_each_steps_own(tiny: Config):
    """run() x3 + one read() gives exactly what three calls (each read at once) give, keys in the same order."""
    cfg = _small(tiny)
    faces = SyntheticFaces(cfg, cfg.train.stages[0])
    _, _, eager = _trainer(cfg)
    _, _, lazy = _trainer(cfg)
    each = [eager(faces.batch(i), "frame") for i in range(3)]
    rows = [lazy.run(faces.batch(i), "frame") for i in range(3)]
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in rows[0].values() if not isinstance(v, float))
    bulk = lazy.read(rows)
    assert bulk == each and [list(r) for r in bulk] == [list(r) for r in each]


def _fused(optimizers) -> None:
    """Fused Adam on the CPU, to exercise the deferred finite check CUDA uses."""
    for optimizer in optimizers.all().values():
        optimizer.defaults["fused"] = True
        for group in optimizer.param_groups:
            group["fused"] = True


def test_deferred_finite_check_skips_every_update_after_a_bad_loss_and_read_raises(tiny: Config):
    cfg = _small(tiny)
    faces = SyntheticFaces(cfg, cfg.train.stages[0])
    models = build_models(cfg)
    optimizers = build_optimizers(cfg, models)
    _fused(optimizers)
    models.train()
    step = TrainStep(cfg, models, optimizers, CPU, finite_check="deferred")
    assert step.deferred
    rows = [step.run(faces.batch(0), "frame")]
    weights = {f"{n}.{k}": p.detach().clone() for n, m in models.trained().items() for k, p in m.named_parameters()}
    bad = faces.batch(1)
    bad["target"][0, 0, 0, 0] = float("nan")
    rows.append(step.run(bad, "frame"))
    rows.append(step.run(faces.batch(2), "frame"))  # a good batch after the bad one: no update either
    after = {f"{n}.{k}": p for n, m in models.trained().items() for k, p in m.named_parameters()}
    assert all(torch.equal(after[k], weights[k]) for k in weights)
    with pytest.raises(NonFiniteLossError, match="non-finite ad_d loss") as info:
        step.read(rows)
    assert info.value.index == 1 and len(info.value.good) == 1 and info.value.good[0]["total"] == info.value.good[0]["total"]


def test_deferred_check_needs_fused_adam(tiny: Config):
    cfg = _small(tiny)
    models = build_models(cfg)
    with pytest.raises(ValueError, match="fused"):
        TrainStep(cfg, models, build_optimizers(cfg, models), CPU, finite_check="deferred")


def test_a_failing_compile_falls_back_to_the_eager_step_with_one_log_line(tiny: Config, monkeypatch, caplog):
    cfg = _small(tiny)
    batch = SyntheticFaces(cfg, cfg.train.stages[0]).batch(0)
    _, _, eager = _trainer(cfg)
    expected = eager(batch, "frame")

    def broken_compile(self, *args, **kwargs):
        def fail(*a, **k):
            raise RuntimeError("no compiler here\nsecond line")

        self._compiled_call_impl = fail

    monkeypatch.setattr(torch.nn.Module, "compile", broken_compile)
    cfg.train.compile = True
    _, _, step = _trainer(cfg)
    with caplog.at_level(logging.WARNING, logger="julnet.training.step"):
        got = step(batch, "frame")
    lines = [r.getMessage() for r in caplog.records if "train.compile" in r.getMessage()]
    assert len(lines) == 1 and "RuntimeError: no compiler here" in lines[0] and "\n" not in lines[0]
    assert got == expected  # the same step as an eager one from the same start
    assert all(module._compiled_call_impl is None for module in step._modules)  # and it goes on eagerly


def test_pinned_collation_stacks_like_numpy():
    arrays = [np.arange(12, dtype=np.uint8).reshape(3, 4) + i for i in range(2)]
    out = _stack_into_new(arrays, pin_memory=False)
    assert out.dtype == torch.uint8 and torch.equal(out, torch.from_numpy(np.stack(arrays)))


def test_loop_writes_every_steps_metrics_when_read_once_per_log_every(tiny: Config, tmp_path: Path):
    cfg = _small(tiny)
    cfg.train.log_every, cfg.train.checkpoint_every = 2, 100
    stage = cfg.train.stages[0].model_copy(update={"steps": 3})
    faces = SyntheticFaces(cfg, stage)
    result = train_stage(cfg, tmp_path, faces.batch, stage)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3]
    assert result.metrics == {k: v for k, v in lines[-1].items() if k not in ("step", "stage")}
