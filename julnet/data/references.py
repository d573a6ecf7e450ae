"""Reference frames fixed per video: which frames with a face `julnet generate` (and evaluation's `even` / `first`
reference strategies) show the generator as references."""

from __future__ import annotations

from typing import get_args

import numpy as np

from julnet.config import GenerateConfig

REFERENCE_STRATEGIES = get_args(GenerateConfig.model_fields["reference_strategy"].annotation)


def reference_indices(found: list[bool], count: int, strategy: str = "even") -> list[int]:
    """`count` source frames with a face: evenly spaced over the video ("even"), or the first ones ("first")."""
    faces = [i for i, ok in enumerate(found) if ok]
    if strategy == "even":
        picks = np.linspace(0, len(faces) - 1, count).round().astype(int)
    elif strategy == "first":
        picks = np.arange(count) % len(faces)
    else:
        raise ValueError(f"reference strategy must be one of {REFERENCE_STRATEGIES}, got {strategy!r}")
    return [faces[p] for p in picks]
