from __future__ import annotations

import pytest
import torch

from julnet.config import Config
from julnet.data.synthetic import SyntheticFaces
from julnet.face import mouth_box
from julnet.models.build import build_models, build_optimizers
from julnet.training.step import NonFiniteLossError, TrainStep


def _setup(cfg: Config):
    models = build_models(cfg)
    optimizers = build_optimizers(cfg, models)
    return models, optimizers, TrainStep(cfg, models, optimizers, torch.device("cpu"))


def _snapshot(models) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v.clone() for n, m in models.trained().items() for k, v in m.state_dict().items()}


def test_synthetic_batches_have_the_documented_shapes_and_are_deterministic(tiny: Config):
    frame, clip = tiny.train.stages
    a = SyntheticFaces(tiny, frame).batch(5)
    assert a["target"].shape == (4, 3, 104, 80) and a["references"].shape == (4, 15, 104, 80)
    assert a["audio"].shape == (4, tiny.audio.dim, 5)
    assert 0 <= a["target"].min() and a["target"].max() <= 1
    top, left, side = mouth_box(104, 80)
    assert a["source"][..., top : top + side, left : left + side].abs().max() == 0
    assert torch.equal(a["source"][..., :top, :], a["target"][..., :top, :])
    b = SyntheticFaces(tiny, frame).batch(5)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["target"], SyntheticFaces(tiny, frame).batch(6)["target"])
    c = SyntheticFaces(tiny, clip).batch(0)
    assert c["target"].shape == (1, 5, 3, 104, 80) and c["audio"].shape == (1, 5, tiny.audio.dim, 5)
    # Consecutive frames' audio windows overlap by all but one row.
    torch.testing.assert_close(c["audio"][:, 1, :, :-1], c["audio"][:, 0, :, 1:])


@pytest.mark.slow
def test_the_model_learns_the_mouth_of_a_fixed_batch(tiny: Config):
    """100 full training steps on one batch at least halve the mouth-region reconstruction error."""
    cfg = tiny.model_copy(deep=True)
    cfg.train.stages[0].batch_size = 2
    models, _, step = _setup(cfg)
    batch = SyntheticFaces(cfg, cfg.train.stages[0]).batch(0)
    models.train()
    first = step(batch, "frame")
    for _ in range(99):
        last = step(batch, "frame")
    assert last["mouth_l1"] < 0.5 * first["mouth_l1"], (first["mouth_l1"], last["mouth_l1"])
    for key in ("total", "un1", "un2", "pe", "ad_g", "ad_d", "error_pred", "grad_norm_g", "grad_norm_ad_d"):
        assert isinstance(last[key], float) and last[key] == last[key]


def test_clip_stage_adds_the_clip_discriminator_and_sync_loss(tiny: Config):
    models, _, step = _setup(tiny)
    before = _snapshot(models)
    batch = SyntheticFaces(tiny, tiny.train.stages[1]).batch(0)
    metrics = step(batch, "clip")
    assert {"sync", "clip_ad_g", "clip_ad_d", "grad_norm_clip_ad_d"} <= set(metrics)
    assert 0 <= metrics["sync"] <= 1
    after = _snapshot(models)
    for prefix in ("generator.", "uncertainty.", "frame_discriminator.", "clip_discriminator."):
        changed = [k for k in after if k.startswith(prefix) and not torch.equal(after[k], before[k])]
        assert changed, f"{prefix} was not updated"


def test_frame_stage_leaves_the_clip_discriminator_alone(tiny: Config):
    models, _, step = _setup(tiny)
    before = _snapshot(models)
    metrics = step(SyntheticFaces(tiny, tiny.train.stages[0]).batch(0), "frame")
    assert "sync" not in metrics and "clip_ad_d" not in metrics
    after = _snapshot(models)
    assert all(torch.equal(after[k], before[k]) for k in after if k.startswith("clip_discriminator."))


def test_non_finite_loss_stops_before_any_weight_changes(tiny: Config):
    models, _, step = _setup(tiny)
    batch = SyntheticFaces(tiny, tiny.train.stages[0]).batch(0)
    batch["target"][0, 0, 0, 0] = float("nan")
    before = _snapshot(models)
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        step(batch, "frame")
    after = _snapshot(models)
    assert all(torch.equal(after[k], before[k]) or "running" in k or "num_batches" in k for k in after)


def test_gradient_clipping_bounds_the_update(tiny: Config):
    cfg = tiny.model_copy(deep=True)
    cfg.optim.grad_clip = 1e-3
    models, opts, step = _setup(cfg)
    batch = SyntheticFaces(cfg, cfg.train.stages[0]).batch(0)
    metrics = step(batch, "frame")
    assert metrics["grad_norm_g"] > 1e-3, "reports the norm before clipping"
    grads = [p.grad for p in models.talking_face.parameters() if p.grad is not None]
    assert torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])) <= 1e-3 * 1.01
