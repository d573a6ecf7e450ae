"""One JULNet training step: discriminator update(s), then the generator + uncertainty update.

Framework-free: the local loop, Ray Train and Tune all call this same object.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from julnet.config import Config
from julnet.face import crop_mouth
from julnet.losses.adversarial import lsgan_discriminator, lsgan_generator
from julnet.losses.perceptual import perceptual_loss
from julnet.losses.sync import sync_loss
from julnet.losses.total import total_loss
from julnet.losses.uncertainty import uncertainty_loss
from julnet.training.build import Models, Optimizers, bare

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the step was not applied."""


@dataclass
class Frames:
    """A batch flattened to single frames; `clip_len` > 1 when consecutive frames form clips."""

    target: Tensor  # (N, 3, H, W)
    source: Tensor  # (N, 3, H, W)
    references: Tensor  # (N, 3R, H, W)
    audio: Tensor  # (N, D, window)
    clip_len: int
    clip_audio: Tensor | None  # (N / clip_len, D, window): the window covering each clip

    def clips(self, frames: Tensor) -> Tensor:
        """(N, 3, H, W) -> (N / clip_len, clip_len, 3, H, W)."""
        return frames.view(-1, self.clip_len, *frames.shape[1:])


def _on_device(x: Tensor, device: torch.device) -> Tensor:
    x = x.to(device, non_blocking=True)
    return x.float().div_(255) if x.dtype == torch.uint8 else x


def flatten_batch(batch: dict[str, Tensor], kind: str, device: torch.device) -> Frames:
    """Frame batches pass through; clip batches (B, T, ...) become B*T frames sharing references.

    uint8 images (as the data loader ships them) become floats in [0, 1] here, on the device.
    """
    b = {k: _on_device(v, device) for k, v in batch.items()}
    if kind == "frame":
        return Frames(b["target"], b["source"], b["references"], b["audio"], 1, None)
    t = b["target"].shape[1]
    return Frames(
        target=b["target"].flatten(0, 1),
        source=b["source"].flatten(0, 1),
        references=b["references"].repeat_interleave(t, dim=0),
        audio=b["audio"].flatten(0, 1),
        clip_len=t,
        clip_audio=b["audio"][:, t // 2],
    )


class TrainStep:
    """Callable `step(batch, kind) -> metrics` holding the models, optimizers and grad scaler."""

    def __init__(
        self,
        cfg: Config,
        models: Models,
        optimizers: Optimizers,
        device: torch.device,
        all_finite: Callable[[bool], bool] = lambda ok: ok,
    ):
        """`all_finite` lets data-parallel ranks agree that every rank's loss is finite before any steps."""
        self.cfg, self.models, self.optimizers, self.device = cfg, models, optimizers, device
        self.all_finite = all_finite
        self.amp = cfg.train.amp and device.type == "cuda"
        if cfg.train.amp and not self.amp:
            log.warning("train.amp=true needs CUDA; this %s run uses float32", device.type)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp)

    def __call__(self, batch: dict[str, Tensor], kind: str) -> dict[str, float]:
        frames = flatten_batch(batch, kind, self.device)
        m = self.models
        with self._autocast():
            gen = m.generator(frames.source, frames.references, frames.audio)
        metrics = self._update_discriminators(frames, gen.image.detach())
        metrics.update(self._update_generator(frames, gen.image, gen.features))
        self.scaler.update()
        return metrics

    @torch.no_grad()
    def preview(self, batch: dict[str, Tensor], kind: str, rows: int = 4) -> dict[str, Tensor]:
        """What the model makes of the first frames of a batch (eval mode), for sample grids."""
        frames = flatten_batch(batch, kind, self.device)
        generator, uncertainty = bare(self.models.generator), bare(self.models.uncertainty)
        modes = generator.training, uncertainty.training
        generator.eval(), uncertainty.eval()
        try:
            source, refs, audio = frames.source[:rows], frames.references[:rows], frames.audio[:rows]
            gen = generator(source, refs, audio)
            unc = uncertainty(gen.image, gen.features if self.cfg.un.use_features else None)
        finally:
            generator.train(modes[0]), uncertainty.train(modes[1])
        return {"source": source, "generated": gen.image, "target": frames.target[:rows], "log_sigma": unc.log_sigma, "error_pred": unc.error_pred}

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp)

    def _update_discriminators(self, frames: Frames, fake: Tensor) -> dict[str, float]:
        m, o = self.models, self.optimizers
        with self._autocast():
            # Real and fake in one forward: a DDP module must run forward once per backward.
            real_scores, fake_scores = m.frame_discriminator(torch.cat([frames.target, fake])).chunk(2)
            losses = {"ad_d": lsgan_discriminator(real_scores, fake_scores)}
            if frames.clip_len > 1:
                clips = torch.cat([frames.clips(frames.target), frames.clips(fake)]).flatten(1, 2)
                losses["clip_ad_d"] = lsgan_discriminator(*m.clip_discriminator(clips).chunk(2))
        metrics = {"d_real": real_scores.float().mean().item(), "d_fake": fake_scores.float().mean().item()}
        for name, module, optimizer in (
            ("ad_d", m.frame_discriminator, o.frame_discriminator),
            ("clip_ad_d", m.clip_discriminator, o.clip_discriminator),
        ):
            if name in losses:
                metrics[f"grad_norm_{name}"] = self._apply(losses[name], module, optimizer, name)
                metrics[name] = losses[name].item()
        return metrics

    def _update_generator(self, frames: Frames, image: Tensor, features: Tensor) -> dict[str, float]:
        m, cfg = self.models, self.cfg
        # Frozen and unwrapped: the discriminators only pass gradients to the generator here.
        frame_d, clip_d = bare(m.frame_discriminator), bare(m.clip_discriminator)
        discriminators = (frame_d, clip_d)
        for d in discriminators:
            d.requires_grad_(False)
        try:
            with self._autocast():
                unc = m.uncertainty(image, features if cfg.un.use_features else None)
                parts = uncertainty_loss(image, frames.target, unc, cfg.un, cfg.hist)
                parts["ad_g"] = lsgan_generator(frame_d(image))
                parts["ad"] = parts["ad_g"]
                if frames.clip_len > 1:
                    parts["clip_ad_g"] = lsgan_generator(clip_d(frames.clips(image).flatten(1, 2)))
                    parts["ad"] = parts["ad"] + parts["clip_ad_g"]
                    assert frames.clip_audio is not None
                    parts["sync"] = sync_loss(m.syncnet, frames.clip_audio, frames.clips(image))
                parts["pe"] = perceptual_loss(m.vgg, image, frames.target, cfg.perceptual.scales, cfg.perceptual.reduction)
                parts["total"] = total_loss(parts, cfg.loss)
            module = nn.ModuleList([m.generator, m.uncertainty])
            grad_norm = self._apply(parts["total"], module, self.optimizers.generator, "total", parts)
        finally:
            for d in discriminators:
                d.requires_grad_(True)
        metrics = {k: v.item() for k, v in parts.items()}
        metrics["grad_norm_g"] = grad_norm
        metrics["mouth_l1"] = (crop_mouth(image.detach()) - crop_mouth(frames.target)).abs().mean().item()
        metrics["lr"] = self.optimizers.generator.param_groups[0]["lr"]
        metrics["d_lr"] = self.optimizers.frame_discriminator.param_groups[0]["lr"]
        return metrics

    def _apply(
        self, loss: Tensor, module: nn.Module, optimizer: torch.optim.Optimizer, name: str, parts: dict[str, Tensor] | None = None
    ) -> float:
        """Backward, unscale, clip and step one optimizer, returning the gradient norm before clipping.

        Refuses to step on a non-finite loss, so the weights stay those of the last good step.
        """
        local_ok = bool(torch.isfinite(loss))
        if not self.all_finite(local_ok):
            shown = {k: round(v.item(), 6) for k, v in (parts or {}).items()}
            where = f"({loss.item()}); parts: {shown}" if not local_ok else "on another rank"
            raise NonFiniteLossError(f"non-finite {name} loss {where}")
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)
        max_norm = self.cfg.optim.grad_clip or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)
        self.scaler.step(optimizer)
        return norm.item()
