"""SyncNet pre-training (paper 3.4.4): contrastive on in-sync and shifted audio/mouth pairs, then frozen for eq. 13.

Positives are a clip's 5 mouth crops with the audio window of its centre frame (which covers exactly those
frames); negatives pair the same mouths with the audio of another clip of the batch. Batches from the loader
come chunk by chunk, so that is mostly the same video at another time: the net must learn sync, not identity.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from julnet import storage
from julnet.config import Config, StageConfig
from julnet.data.loader import collate, iter_examples
from julnet.data.manifest import read_manifest
from julnet.data.synthetic import SyntheticFaces
from julnet.losses.sync import mouth_clip, sync_score_bce
from julnet.models.syncnet import MIN_BATCH, SyncNet, clip_stage
from julnet.tracking import RunTracker
from julnet.models.build import resolve_device
from julnet.training.loop import Progress

log = logging.getLogger(__name__)

Batch = dict[str, Tensor]
WEIGHTS_FILE = "syncnet.pt"
METRICS_FILE = "metrics.json"
EVAL_BATCHES = 32
NO_VAL = "train-split (no val videos)"


def sync_pairs(batch: Batch, mouth_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Clip batch -> (audio (2B,D,W), mouths (2B,3T,m,m) in [0,1], labels (2B,)): B in-sync pairs, then B shifted."""
    target, audio = batch["target"], batch["audio"]
    b, t = target.shape[:2]
    if b < MIN_BATCH:
        raise ValueError(f"SyncNet pairs need at least {MIN_BATCH} clips per batch (negatives take another clip's audio), got {b}")
    frames = target.float().div(255) if target.dtype == torch.uint8 else target.float()
    mouths = mouth_clip(frames, mouth_size)
    centre = audio[:, t // 2].float()
    labels = torch.cat([torch.ones(b), torch.zeros(b)]).to(centre.device)
    return torch.cat([centre, centre.roll(1, dims=0)]), torch.cat([mouths, mouths]), labels


class SyncNetTrainer:
    """A SyncNet, its Adam optimizer and the contrastive step; seeded by train.seed."""

    def __init__(self, cfg: Config, device: torch.device | str):
        torch.manual_seed(cfg.train.seed)
        self.device = torch.device(device)
        self.syncnet = SyncNet(cfg, cfg.audio.window).to(self.device)
        self.optimizer = torch.optim.Adam(self.syncnet.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas)
        self.mouth_size = cfg.syncnet.mouth_size

    def _scored(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """(loss, scores, labels) of a batch's pairs."""
        on_device = {k: batch[k].to(self.device, non_blocking=True) for k in ("target", "audio")}
        audio, mouths, labels = sync_pairs(on_device, self.mouth_size)
        scores = self.syncnet(audio, mouths)
        return sync_score_bce(scores, labels), scores.detach().float(), labels

    def step(self, batch: Batch) -> dict[str, float]:
        """One optimizer step; loss, accuracy at 0.5 and mean positive / negative scores of its pairs."""
        self.syncnet.train()
        loss, scores, labels = self._scored(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item(), **_score_stats(scores, labels)}

    @torch.no_grad()
    def evaluate(self, batches: Iterable[Batch]) -> dict[str, float]:
        """Held-out metrics in eval mode, pooled over every pair of `batches`."""
        self.syncnet.eval()
        loss_sum, scores, labels = 0.0, [], []
        for batch in batches:
            loss, batch_scores, batch_labels = self._scored(batch)
            loss_sum += loss.item() * len(batch_labels)
            scores.append(batch_scores)
            labels.append(batch_labels)
        if not scores:
            raise ValueError("no held-out batches to evaluate the SyncNet on")
        stats = _score_stats(torch.cat(scores), torch.cat(labels))
        pairs = sum(len(x) for x in labels)
        return {"sync_accuracy": stats.pop("accuracy"), "loss": loss_sum / pairs, **stats, "pairs": pairs}

    def state_dict(self) -> dict[str, Tensor]:
        """The SyncNet's weights on CPU: what `syncnet.weights.path` loads."""
        return {k: v.detach().cpu() for k, v in self.syncnet.state_dict().items()}


def _score_stats(scores: Tensor, labels: Tensor) -> dict[str, float]:
    """Accuracy at threshold 0.5 and the mean score of in-sync and of shifted pairs."""
    in_sync = labels.bool()
    return {
        "accuracy": ((scores > 0.5) == in_sync).float().mean().item(),
        "pos_score": scores[in_sync].mean().item(),
        "neg_score": scores[~in_sync].mean().item(),
    }


def train_syncnet(
    cfg: Config,
    train_batches: Callable[[int], Batch],
    eval_batches: Callable[[], Iterable[Batch]],
    steps: int,
    out_dir: Path,
    log_every: int,
    heldout: str = "val",
) -> dict[str, Any]:
    """Train for `steps` (batches(step) for step = 1..steps), evaluate held out, write syncnet.pt and metrics.json.

    `heldout` names where the evaluation batches come from; it is recorded in metrics.json.
    """
    trainer = SyncNetTrainer(cfg, resolve_device(cfg.train.device))
    progress = Progress("syncnet", 0, steps)
    curve: list[dict[str, float]] = []
    window: list[dict[str, float]] = []
    start = time.perf_counter()
    for step in range(1, steps + 1):
        window.append(trainer.step(train_batches(step)))
        if step % log_every == 0 or step == steps:
            mean = {k: sum(m[k] for m in window) / len(window) for k in window[0]}
            curve.append({"step": step, **mean})
            progress.report(step, {"sync": mean["loss"]})
            window = []
    seconds = time.perf_counter() - start
    evaluation = trainer.evaluate(eval_batches())
    log.info("[syncnet] held-out (%s): %s", heldout, " ".join(f"{k}={v:.4g}" for k, v in evaluation.items()))

    weights = out_dir / WEIGHTS_FILE
    buffer = io.BytesIO()
    torch.save(trainer.state_dict(), buffer)
    storage.write_bytes(str(weights), buffer.getvalue())
    metrics = {
        "steps": steps,
        "seconds_per_step": seconds / max(steps, 1),
        "train": curve,
        "heldout": heldout,
        "eval": evaluation,
        "weights": str(weights),
    }
    storage.write_text(str(out_dir / METRICS_FILE), json.dumps(metrics, indent=2) + "\n")
    return metrics


def synthetic_sources(cfg: Config, stage: StageConfig) -> tuple[Callable[[int], Batch], Callable[[], Iterable[Batch]], str]:
    """(train batches, held-out batches, held-out name) from SyntheticFaces; held out with another seed."""
    train = SyntheticFaces(cfg, stage, seed=cfg.train.seed)
    heldout = SyntheticFaces(cfg, stage, seed=cfg.train.seed + 1)
    return train.batch, lambda: (heldout.batch(i) for i in range(EVAL_BATCHES)), f"synthetic (seed {cfg.train.seed + 1})"


def manifest_sources(cfg: Config, stage: StageConfig, manifest_uri: str) -> tuple[Callable[[int], Batch], Callable[[], Iterable[Batch]], str]:
    """(train batches, held-out batches, held-out name) from a dataset: the train split, epoch after epoch, read
    in order (the step index is not used); held out from the val split, or from the train split with another
    seed when the val split has no videos."""
    seed, refs = cfg.train.seed, cfg.generator.num_references
    examples = itertools.chain.from_iterable(
        iter_examples(manifest_uri, stage, refs, "train", seed=seed, epoch=epoch) for epoch in itertools.count()
    )
    stream = _batches(examples, stage.batch_size)
    split, heldout = "val", "val"
    if not read_manifest(manifest_uri).split("val"):
        split, heldout = "train", NO_VAL
        log.warning("[syncnet] %s has no val videos: held-out metrics come from the train split (seed %d)", manifest_uri, seed + 1)

    def heldout_batches() -> Iterator[Batch]:
        examples = iter_examples(manifest_uri, stage, refs, split, seed=seed + 1)
        return itertools.islice(_batches(examples, stage.batch_size), EVAL_BATCHES)

    return lambda step: next(stream), heldout_batches, heldout


def _batches(examples: Iterator[dict[str, Any]], size: int) -> Iterator[Batch]:
    """Collated batches of `size` examples; a shorter last batch is kept when it can still form pairs."""
    while chunk := list(itertools.islice(examples, size)):
        if len(chunk) >= MIN_BATCH:
            yield collate(chunk)


def pretrain_on_ray(cfg: Config, manifest_uri: str, steps: int) -> tuple[dict[str, Any], bytes]:
    """Train in one Ray task (on a GPU worker when train.use_gpu), from the manifest's shards; (metrics, weights)."""
    import ray

    resources = {"num_cpus": cfg.train.cpus_per_worker, "num_gpus": 1 if cfg.train.use_gpu else 0}
    return ray.get(ray.remote(_pretrain_task).options(**resources).remote(cfg.to_dict(), manifest_uri, steps))


def _pretrain_task(config: dict[str, Any], manifest_uri: str, steps: int) -> tuple[dict[str, Any], bytes]:
    """The body of pretrain_on_ray's task: train into a scratch folder, return the metrics and the weights' bytes."""
    cfg = Config.model_validate(config)
    train_batches, eval_batches, heldout = manifest_sources(cfg, clip_stage(cfg), manifest_uri)
    with tempfile.TemporaryDirectory() as out:
        metrics = train_syncnet(cfg, train_batches, eval_batches, steps, Path(out), cfg.train.log_every, heldout)
        return metrics, (Path(out) / WEIGHTS_FILE).read_bytes()


def log_pretraining(tracker: RunTracker, steps: int, metrics: dict[str, Any], weights: bytes) -> None:
    """Log a pre-training onto a started MLflow run: sync_* curves, heldout_* metrics, the weights under syncnet/."""
    tracker.log_metrics([(row["step"], {f"sync_{k}": v for k, v in row.items() if k != "step"}) for row in metrics["train"]])
    tracker.log_metrics([(steps, {f"heldout_{k}": v for k, v in metrics["eval"].items()})])
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / WEIGHTS_FILE).write_bytes(weights)
        tracker.log_artifacts(folder, "syncnet")
    tracker.log_dict({k: v for k, v in metrics.items() if k != "weights"}, "syncnet/metrics.json")
