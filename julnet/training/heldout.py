"""A fixed evaluation batch and the reconstruction metrics a sweep ranks trials by.

The weighted training loss cannot compare trials that sweep the λ weighting it, so trials are ranked on the same
examples with metrics that do not depend on any λ: the L1 error of the generated face and of its mouth region, and
the mouth PSNR. The batch is drawn once per worker from a manifest split with a fixed seed, so every trial and
every report sees exactly the same examples.
"""

from __future__ import annotations

from itertools import islice

import torch
from torch import Tensor

from julnet.config import StageConfig, StageKind
from julnet.data.loader import collate, iter_examples
from julnet.data.manifest import Split
from julnet.face import crop_mouth
from julnet.losses.psnr import mouth_psnr
from julnet.models.build import Models, bare
from julnet.data.frames import flatten_batch


def heldout_batch(manifest_uri: str, stage: StageConfig, num_references: int, split: Split, examples: int, seed: int) -> dict[str, Tensor]:
    """The first `examples` examples of `split` at the stage's resolution, in the order fixed by `seed`."""
    items = list(islice(iter_examples(manifest_uri, stage, num_references, split, seed=seed), examples))
    if len(items) < examples:
        raise ValueError(f"{manifest_uri}: split {split!r} yields {len(items)} examples at stage {stage.name}, "
                         f"fewer than the {examples} asked for")
    return collate(items)


@torch.no_grad()
def heldout_metrics(models: Models, batch: dict[str, Tensor], kind: StageKind, device: torch.device, chunk: int) -> dict[str, float]:
    """eval_l1, eval_mouth_l1 (mean absolute error in [0, 1]) and eval_mouth_psnr (dB) of the generator in eval mode."""
    generator = bare(models.talking_face).generator
    was_training = generator.training
    generator.eval()
    sums = {"eval_l1": 0.0, "eval_mouth_l1": 0.0, "eval_mouth_psnr": 0.0}
    frames_seen = 0
    try:
        for start in range(0, len(batch["target"]), chunk):
            frames = flatten_batch({k: v[start : start + chunk] for k, v in batch.items()}, kind, device)
            image = generator(frames.source, frames.references, frames.audio).image.float()
            n = len(image)
            sums["eval_l1"] += (image - frames.target).abs().mean().item() * n
            sums["eval_mouth_l1"] += (crop_mouth(image) - crop_mouth(frames.target)).abs().mean().item() * n
            sums["eval_mouth_psnr"] += mouth_psnr(image.clamp(0, 1), frames.target) * n
            frames_seen += n
    finally:
        generator.train(was_training)
    return {key: total / frames_seen for key, total in sums.items()}
