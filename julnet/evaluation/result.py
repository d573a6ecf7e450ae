"""What one evaluation produced: metrics, why others are missing, and exactly what was measured with what.

JSON-serialisable (`to_dict` / `from_dict`), so a result can be stored, logged and compared later. LSE from
the project's own SyncNet is named `lse_d_own` / `lse_c_own`: it never shares a name with the expert's LSE.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from julnet.table import aligned

Direction = Literal["higher", "lower"]

METRIC_DIRECTIONS: dict[str, Direction] = {
    "psnr": "higher",
    "psnr_mouth": "higher",
    "lpips": "lower",
    "fid": "lower",
    "lse_d": "lower",
    "lse_c": "higher",
    "lse_d_own": "lower",
    "lse_c_own": "higher",
    "spearman_sigma": "higher",
    "ause_sigma": "lower",
    "spearman_error_pred": "higher",
    "ause_error_pred": "lower",
    "aurg_sigma": "higher",
    "aurg_error_pred": "higher",
    "spearman_epistemic": "higher",
    "ause_epistemic": "lower",
    "aurg_epistemic": "higher",
    "nll_sigma": "lower",
    "coverage50_gap_sigma": "lower",
    "coverage90_gap_sigma": "lower",
    "uce_sigma": "lower",
    "aurc_confidence": "lower",
    "eaurc_confidence": "lower",
    "aurc_epistemic": "lower",
    "eaurc_epistemic": "lower",
}
"""Whether a larger value of each metric is better; promotion compares candidates with it."""


@dataclass
class EvaluationResult:
    """Metrics of one model on one dataset split, with the provenance needed to trust or reuse them."""

    model: str  # the URI or path it was loaded from, or the caller's label for an in-memory model
    model_sha256: str  # of the generator's and uncertainty module's weights
    model_stage: str | None
    resolution: list[int]  # [width, height] it ran at (the order of every size julnet writes)
    data: str  # manifest URI
    data_sha256: str
    split: str
    split_by: str
    code_version: str
    lse_source: str | None  # "expert", "own" (metrics named *_own) or None (LSE unavailable)
    networks: dict[str, str | None]  # where each metric network's weights came from (None: not used); lse_sha256 of the SyncNet
    metrics: dict[str, float]
    unavailable: dict[str, str]  # metric -> reason it was not computed
    counts: dict[str, int]  # videos, frames, lse_videos, calibration frames
    sparsification: dict[str, list[float]]  # fractions, oracle, sigma, error_pred (, epistemic): mean remaining error per frame
    settings: dict[str, Any]
    seconds: float
    directions: dict[str, Direction] = field(default_factory=dict)
    # reliability (predicted σ, observed |ε| per σ bin, mean over frames) and risk_coverage (coverage, risk, oracle)
    calibration_curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.metrics.items() if not math.isfinite(v) or k not in METRIC_DIRECTIONS}
        if bad:
            raise ValueError(f"metrics must be finite and known (METRIC_DIRECTIONS), got {bad}")
        self.directions = {k: METRIC_DIRECTIONS[k] for k in self.metrics}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationResult:
        return cls(**data)


def format_table(result: EvaluationResult) -> str:
    """A plain-text table: one row per metric with its value and direction, or why it is unavailable."""
    lse = f"from the {result.lse_source} SyncNet ({result.networks['lse']})" if result.lse_source else "unavailable"
    head = [
        f"model {result.model} (sha256 {result.model_sha256[:12]}, stage {result.model_stage}, {result.resolution[0]} wide, {result.resolution[1]} high)",
        f"data  {result.data} (sha256 {result.data_sha256[:12]}), split {result.split} by {result.split_by}: "
        f"{result.counts['videos']} videos, {result.counts['frames']} frames",
        f"LSE   {lse}; code {result.code_version}",
        "",
    ]
    names = [k for k in METRIC_DIRECTIONS if k in result.metrics or k in result.unavailable]
    rows = [("metric", "value", "better")]
    for key in names:
        if key in result.metrics:
            rows.append((key, f"{result.metrics[key]:.4f}", METRIC_DIRECTIONS[key]))
        else:
            rows.append((key, f"unavailable: {result.unavailable[key]}"))
    return "\n".join(head) + "\n" + aligned(rows, right=(1,))
