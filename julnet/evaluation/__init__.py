"""Evaluation metrics (SPEC 1 "Evaluation"): PSNR, FID, LPIPS, LSE-D/C and uncertainty calibration.

Framework-free: plain torch / numpy / scipy on tensors and precomputed embeddings. Metrics that need
pretrained weights that are not configured come back as `Unavailable(reason)`, never on random weights.

The suite that runs them on a dataset's held-out split is `julnet.evaluation.suite.evaluate` (heldout.py walks
the frames; result.py holds the result and METRIC_DIRECTIONS; publish.py writes it to storage and MLflow).
"""

from julnet.evaluation.calibration import Sparsification, average_ranks, sparsification, spearman
from julnet.evaluation.expert_syncnet import ExpertSyncNet, load_expert_syncnet
from julnet.evaluation.fid import FeatureExtractor, RunningStatistics, feature_statistics, frechet_distance, load_fid_extractor
from julnet.evaluation.inception import FIDInceptionV3
from julnet.evaluation.lpips import LPIPS, load_lpips, lpips_heads_path
from julnet.evaluation.result import METRIC_DIRECTIONS, EvaluationResult, format_table
from julnet.evaluation.sync import lse
from julnet.evaluation.unavailable import Unavailable
from julnet.losses.psnr import mouth_psnr, psnr

__all__ = [
    "LPIPS",
    "METRIC_DIRECTIONS",
    "EvaluationResult",
    "ExpertSyncNet",
    "FIDInceptionV3",
    "FeatureExtractor",
    "RunningStatistics",
    "Sparsification",
    "Unavailable",
    "average_ranks",
    "feature_statistics",
    "format_table",
    "frechet_distance",
    "load_expert_syncnet",
    "load_fid_extractor",
    "load_lpips",
    "lpips_heads_path",
    "lse",
    "mouth_psnr",
    "psnr",
    "sparsification",
    "spearman",
]
