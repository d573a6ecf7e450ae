"""One JULNet training step: discriminator update(s), then the generator + uncertainty update.

Framework-free: the local loop, Ray Train and Tune all call this same object.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from julnet.config import Config, ConfigError, StageKind
from julnet.data.frames import Frames, flatten_batch
from julnet.face import crop_mouth
from julnet.losses.adversarial import lsgan_discriminator, lsgan_generator
from julnet.losses.perceptual import perceptual_loss
from julnet.losses.sync import sync_loss
from julnet.losses.total import total_loss
from julnet.losses.uncertainty import uncertainty_loss
from julnet.models.talking_face import TalkingFaceOutput
from julnet.models.build import Models, Optimizers, bare

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the step was not applied.

    Raised by a deferred check (see TrainStep.read), `good` holds the metrics of the steps read before the bad one
    and `index` the bad step's position among the rows read.
    """

    def __init__(self, message: str, good: list[dict[str, float]] | None = None, index: int = 0):
        super().__init__(message)
        self.good, self.index = good or [], index


# A step's metrics as the step leaves them: detached 0-dim tensors on the device (and plain floats), read on the host
# only by TrainStep.read, in one transfer for many steps.
StepMetrics = dict[str, "Tensor | float"]
_FLAG = "_nonfinite:"  # keys of the deferred finite check's per-optimizer flags (dropped when read)


def select_precision(precision: str, device_type: str, bf16_supported: bool) -> tuple[torch.dtype, bool]:
    """train.precision on a device -> (autocast dtype, whether a GradScaler is used); float32 means no autocast.

    auto: bf16 on CUDA GPUs that support it (it needs no scaler), fp16 + GradScaler on older ones, fp32 elsewhere.
    bf16 and fp16 are CUDA only (ConfigError elsewhere).
    """
    cuda = device_type == "cuda"
    if precision == "auto":
        if not cuda:
            return torch.float32, False
        return (torch.bfloat16, False) if bf16_supported else (torch.float16, True)
    if precision == "bf16":
        if not cuda:
            # torch has no CPU bfloat16 kernel for the antialiased resize of the perceptual loss's second scale.
            raise ConfigError(f"train.precision=bf16 needs CUDA (the perceptual loss's antialiased resize has no {device_type} bf16 kernel); use fp32 or auto")
        if not bf16_supported:
            raise ConfigError("train.precision=bf16: this CUDA GPU does not support bfloat16; use fp16 or auto")
        return torch.bfloat16, False
    if precision == "fp16":
        if not cuda:
            raise ConfigError(f"train.precision=fp16 needs CUDA (fp16 autocast + GradScaler); on {device_type} use fp32")
        return torch.float16, True
    if precision == "fp32":
        return torch.float32, False
    raise ConfigError(f"train.precision={precision!r}: expected auto, bf16, fp16 or fp32")


def precision_name(dtype: torch.dtype, scaler: bool) -> str:
    if dtype == torch.float32:
        return "fp32"
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype] + " autocast" + (" + GradScaler" if scaler else "")


def _detached(value: Tensor | float) -> Tensor | float:
    return value.detach() if isinstance(value, Tensor) else float(value)


class TrainStep:
    """`step(batch, kind) -> metrics` holding the models, optimizers, grad scaler and the step's settings.

    `run(batch, kind)` is the step itself: it leaves its metrics on the device (no host-device synchronisation on
    CUDA) and `read(rows)` brings many steps' metrics to the host at once; calling the object does both for one step.

    The finite check: a step never applies an update from a NaN or infinite loss. With `finite_check="sync"` (the
    default off CUDA) each loss is checked on the host before its optimizer steps and NonFiniteLossError is raised
    at once. With "deferred" (the default on CUDA when every optimizer is fused Adam) the check stays on the device:
    the first non-finite loss makes this and every later optimizer step a no-op (fused Adam's `found_inf`), so the
    weights stay those of the last good update, and `read` raises NonFiniteLossError for the first bad step.
    """

    def __init__(
        self,
        cfg: Config,
        models: Models,
        optimizers: Optimizers,
        device: torch.device,
        all_finite: Callable[[bool], bool] = lambda ok: ok,
        any_rank: Callable[[Tensor], Tensor] = lambda flag: flag,
        finite_check: Literal["auto", "sync", "deferred"] = "auto",
    ):
        """`all_finite` lets data-parallel ranks agree that every rank's loss is finite before any steps; `any_rank`
        does the same for the deferred check's flag tensor (1: non-finite here), on the device.

        Models are put in channels_last format (CUDA, train.channels_last) and compiled (train.compile) in place
        here: construct the step before wrapping the models in DistributedDataParallel.
        """
        self.cfg, self.models, self.optimizers, self.device = cfg, models, optimizers, device
        self.all_finite, self.any_rank = all_finite, any_rank
        t = cfg.train
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.dtype, use_scaler = select_precision(t.precision, device.type, bf16)
        self.amp = self.dtype != torch.float32
        self.precision = precision_name(self.dtype, use_scaler)
        self.scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
        fused = all(o.defaults.get("fused") for o in optimizers.all().values())
        if finite_check == "auto":
            finite_check = "deferred" if device.type == "cuda" and fused else "sync"
        if finite_check == "deferred" and not fused:
            raise ValueError("the deferred finite check needs fused Adam optimizers (train.fused_adam on CUDA)")
        self.deferred = finite_check == "deferred"
        self._poisoned = torch.zeros((), device=device)  # deferred check: 1 once any loss was non-finite
        self.memory_format = torch.channels_last if t.channels_last and device.type == "cuda" else torch.contiguous_format
        self._modules = [bare(getattr(models, name)) for name in (*Models.TRAINED, "syncnet", "vgg")]
        if self.memory_format == torch.channels_last:
            for module in self._modules:
                module.to(memory_format=torch.channels_last)
        self._compile_pending = t.compile
        if t.compile:
            for module in self._modules:
                module.compile()

    def __call__(self, batch: dict[str, Tensor], kind: StageKind) -> dict[str, float]:
        return self.read([self.run(batch, kind)])[0]

    def run(self, batch: dict[str, Tensor], kind: StageKind) -> StepMetrics:
        """One training step; its metrics stay on the device until `read`."""
        if self._compile_pending:
            return self._first_compiled(batch, kind)
        frames = flatten_batch(batch, kind, self.device, self.memory_format)
        with self._autocast():
            out = self.models.talking_face(frames.source, frames.references, frames.audio)
        metrics = self._update_discriminators(frames, out.generated.image.detach())
        metrics.update(self._update_generator(frames, out))
        self.scaler.update()
        return metrics

    def read(self, rows: Sequence[Mapping[str, Tensor | float]]) -> list[dict[str, float]]:
        """Steps' metrics as floats, with one device-to-host transfer for all of them (same values as each step's
        own `.item()`s). Raises NonFiniteLossError for the first step the deferred finite check flagged."""
        tensors = [v.float().reshape(()) for row in rows for v in row.values() if isinstance(v, Tensor)]
        values = iter(torch.stack(tensors).tolist() if tensors else [])
        out = [{k: next(values) if isinstance(v, Tensor) else float(v) for k, v in row.items()} for row in rows]
        for index, row in enumerate(out):
            bad = [k.removeprefix(_FLAG) for k, v in row.items() if k.startswith(_FLAG) and v > 0]
            if bad:
                self._poisoned.zero_()
                name = bad[0]
                losses = {k: round(v, 6) for k, v in row.items() if not k.startswith(("_", "grad_norm", "lr", "d_lr"))}
                local = row.get(name, float("nan"))
                where = f"({local}); parts: {losses}" if local != local or abs(local) == float("inf") else "on another rank"
                good = [_public(r) for r in out[:index]]
                raise NonFiniteLossError(f"non-finite {name} loss {where}", good, index)
        return [_public(row) for row in out]

    def _first_compiled(self, batch: dict[str, Tensor], kind: StageKind) -> StepMetrics:
        """The first step with compiled networks; if it fails, one log line, then the same step eagerly."""
        self._compile_pending = False
        saved = self._state()
        try:
            metrics = self.run(batch, kind)
            self.read([metrics])  # compiled code may fail late (e.g. its backward); errors surface here
            return metrics
        except NonFiniteLossError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the compiled step: fall back, say why
            reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            log.warning("train.compile: the compiled step failed (%s: %s); training without torch.compile", type(exc).__name__, reason)
            for module in self._modules:
                module._compiled_call_impl = None  # what nn.Module.compile set
            self._restore(saved)
            return self.run(batch, kind)

    def _state(self) -> dict:
        return copy.deepcopy({
            "models": [m.state_dict() for m in self._modules],
            "optimizers": [o.state_dict() for o in self.optimizers.all().values()],
            "scaler": self.scaler.state_dict(),
        })

    def _restore(self, state: dict) -> None:
        for module, sd in zip(self._modules, state["models"]):
            module.load_state_dict(sd)
        for optimizer, sd in zip(self.optimizers.all().values(), state["optimizers"]):
            optimizer.load_state_dict(sd)
            optimizer.zero_grad(set_to_none=True)
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self._poisoned.zero_()

    @torch.no_grad()
    def preview(self, batch: dict[str, Tensor], kind: StageKind, rows: int = 4) -> dict[str, Tensor]:
        """What the model makes of the first frames of a batch (eval mode), for sample grids."""
        frames = flatten_batch(batch, kind, self.device, self.memory_format)
        face = bare(self.models.talking_face)
        mode = face.training
        face.eval()
        try:
            source = frames.source[:rows]
            gen, unc = face(source, frames.references[:rows], frames.audio[:rows])
        finally:
            face.train(mode)
        return {"source": source, "generated": gen.image, "target": frames.target[:rows], "log_sigma": unc.log_sigma, "error_pred": unc.error_pred}

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.dtype if self.amp else None, enabled=self.amp)

    def _update_discriminators(self, frames: Frames, fake: Tensor) -> StepMetrics:
        m, o = self.models, self.optimizers
        with self._autocast():
            # Real and fake in one forward: a DDP module must run forward once per backward.
            real_scores, fake_scores = m.frame_discriminator(torch.cat([frames.target, fake])).chunk(2)
            losses = {"ad_d": lsgan_discriminator(real_scores, fake_scores)}
            if frames.clip_len > 1:
                clips = torch.cat([frames.clips(frames.target), frames.clips(fake)]).flatten(1, 2)
                losses["clip_ad_d"] = lsgan_discriminator(*m.clip_discriminator(clips).chunk(2))
        metrics: StepMetrics = {"d_real": real_scores.detach().float().mean(), "d_fake": fake_scores.detach().float().mean()}
        for name, module, optimizer in (
            ("ad_d", m.frame_discriminator, o.frame_discriminator),
            ("clip_ad_d", m.clip_discriminator, o.clip_discriminator),
        ):
            if name in losses:
                metrics[f"grad_norm_{name}"] = self._apply(losses[name], module, optimizer, name, metrics)
                metrics[name] = losses[name].detach()
        return metrics

    def _update_generator(self, frames: Frames, out: TalkingFaceOutput) -> StepMetrics:
        m, cfg = self.models, self.cfg
        image = out.generated.image
        # Frozen and unwrapped: the discriminators only pass gradients to the generator here.
        frame_d, clip_d = bare(m.frame_discriminator), bare(m.clip_discriminator)
        discriminators = (frame_d, clip_d)
        for d in discriminators:
            d.requires_grad_(False)
        flags: StepMetrics = {}
        try:
            with self._autocast():
                parts = uncertainty_loss(image, frames.target, out.uncertainty, cfg.un, cfg.hist)
                parts["ad_g"] = lsgan_generator(frame_d(image))
                parts["ad"] = parts["ad_g"]
                if frames.clip_len > 1:
                    parts["clip_ad_g"] = lsgan_generator(clip_d(frames.clips(image).flatten(1, 2)))
                    parts["ad"] = parts["ad"] + parts["clip_ad_g"]
                    assert frames.clip_audio is not None
                    parts["sync"] = sync_loss(m.syncnet, frames.clip_audio, frames.clips(image))
                parts["pe"] = perceptual_loss(m.vgg, image, frames.target, cfg.perceptual.scales, cfg.perceptual.reduction)
                parts["total"] = total_loss(parts, cfg.loss)
            grad_norm = self._apply(parts["total"], m.talking_face, self.optimizers.generator, "total", flags, parts)
        finally:
            for d in discriminators:
                d.requires_grad_(True)
        metrics: StepMetrics = {k: _detached(v) for k, v in parts.items()}
        metrics["grad_norm_g"] = grad_norm
        metrics["mouth_l1"] = (crop_mouth(image.detach()) - crop_mouth(frames.target)).abs().mean()
        metrics["lr"] = self.optimizers.generator.param_groups[0]["lr"]
        metrics["d_lr"] = self.optimizers.frame_discriminator.param_groups[0]["lr"]
        metrics.update(flags)
        return metrics

    def _apply(
        self,
        loss: Tensor,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        name: str,
        flags: StepMetrics,
        parts: dict[str, Tensor] | None = None,
    ) -> Tensor:
        """Backward, unscale, clip and step one optimizer, returning the gradient norm before clipping (on the device).

        Refuses to step on a non-finite loss, so the weights stay those of the last good step: at once on the host
        (sync check), or on the device (deferred check, flag recorded in `flags` for `read`).
        """
        if self.deferred:
            bad = self.any_rank(torch.isfinite(loss.detach()).logical_not().float())
            torch.maximum(self._poisoned, bad, out=self._poisoned)
            flags[_FLAG + name] = bad
        else:
            local_ok = bool(torch.isfinite(loss))
            if not self.all_finite(local_ok):
                shown = {k: round(v.item(), 6) for k, v in (parts or {}).items()}
                where = f"({loss.item()}); parts: {shown}" if not local_ok else "on another rank"
                raise NonFiniteLossError(f"non-finite {name} loss {where}")
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.deferred and self.scaler.is_enabled():
            # The scaler skips a step whose gradients are not finite: make them so once the check has tripped.
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if grads:
                torch._foreach_mul_(grads, torch.where(self._poisoned > 0, float("nan"), 1.0))
        self.scaler.unscale_(optimizer)
        max_norm = self.cfg.optim.grad_clip or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)
        if self.deferred and not self.scaler.is_enabled():
            optimizer.grad_scale, optimizer.found_inf = None, self._poisoned  # fused Adam: no update while tripped
            try:
                optimizer.step()
            finally:
                del optimizer.grad_scale, optimizer.found_inf
        else:
            self.scaler.step(optimizer)
        return norm.detach()


def _public(row: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in row.items() if not k.startswith(_FLAG)}
