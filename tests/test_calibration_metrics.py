"""Calibration metrics of σ (julnet.evaluation.calibration): NLL, interval coverage, AURG, UCE / reliability, AURC."""

import math

import numpy as np
import pytest
import torch

from julnet.evaluation.calibration import (
    aurc,
    aurg,
    interval_coverage,
    nll_laplace,
    random_gain,
    reliability,
    sparsification,
    uce,
)
from julnet.face import mouth_box
from julnet.visualize import reliability_plot, risk_coverage_plot


@pytest.fixture(scope="module")
def calibrated() -> tuple[np.ndarray, np.ndarray]:
    """200k pixels whose true error is drawn from Laplace(0, σ) (absolute value): σ is calibrated by construction."""
    rng = np.random.default_rng(16)
    sigma = rng.uniform(0.02, 0.3, 200_000)
    return sigma, np.abs(rng.laplace(0.0, sigma))


def test_nll_laplace_by_hand():
    expected = ((math.log(2) + 1) + (math.log(4) + 0)) / 2
    assert nll_laplace(np.array([1.0, 2.0]), np.array([1.0, 0.0])) == pytest.approx(expected, abs=1e-12)
    assert nll_laplace(torch.tensor([[1.0, 2.0]]), torch.tensor([[-1.0, 0.0]])) == pytest.approx(expected, rel=1e-6), "|ε|, tensors"
    assert math.isfinite(nll_laplace(np.zeros(3), np.ones(3))), "σ = 0 is floored, not inf"


def test_interval_coverage_by_hand():
    # half-widths for σ = 1: ln 2 ≈ 0.693 (50 %), ln 10 ≈ 2.303 (90 %)
    covered = interval_coverage(np.ones(4), np.array([0.1, 0.5, 1.0, 3.0]))
    assert covered == {0.5: 0.5, 0.9: 0.75}
    assert interval_coverage(np.full(2, 2.0), np.array([2 * math.log(2) - 1e-9, 2 * math.log(2) + 1e-9]), (0.5,)) == {0.5: 0.5}
    with pytest.raises(ValueError, match="levels"):
        interval_coverage(np.ones(2), np.ones(2), (1.0,))


def test_aurg_by_hand_and_from_sparsification():
    sigma = error = np.array([4.0, 3.0, 2.0, 1.0])
    # curve (largest σ removed first) 2.5, 2, 1.5, 1 at 0, .25, .5, .75; random stays at 2.5
    curve_area = 0.25 * ((2.5 + 2) / 2 + (2 + 1.5) / 2 + (1.5 + 1) / 2)
    assert aurg(sigma, error, steps=4) == pytest.approx(2.5 * 0.75 - curve_area, abs=1e-12)
    assert random_gain(sparsification(sigma, error, 4)) == aurg(sigma, error, 4)
    worst_area = 0.25 * ((2.5 + 3) / 2 + (3 + 3.5) / 2 + (3.5 + 4) / 2)  # smallest error removed first: worse than random
    assert aurg(-sigma, error, steps=4) == pytest.approx(2.5 * 0.75 - worst_area) == -0.5625


def test_aurg_of_oracle_is_positive_and_of_random_about_zero(calibrated):
    _, error = calibrated
    rng = np.random.default_rng(0)
    oracle = aurg(error, error)
    assert oracle > 0.3 * error.mean()
    assert abs(aurg(rng.uniform(size=error.size), error)) < 0.01 * error.mean()
    assert 0 < aurg(calibrated[0], error) < oracle, "a calibrated σ ranks the error, but not as well as the error itself"


def test_reliability_and_uce_by_hand():
    sigma, error = np.array([3.0, 1.0, 3.0, 1.0]), np.array([3.0, 2.0, 5.0, 0.0])
    points = reliability(sigma, error, bins=2)  # equal-count bins, σ ascending: {1, 1} and {3, 3}
    assert points.predicted.tolist() == [1.0, 3.0] and points.observed.tolist() == [1.0, 4.0] and points.counts.tolist() == [2, 2]
    assert uce(sigma, error, bins=2) == pytest.approx(0.5)  # (2·|1 − 1| + 2·|4 − 3|) / 4
    assert uce(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]), bins=2) == pytest.approx((2 * 0 + 1 * 2) / 3)  # 2 + 1 pixels
    assert reliability(np.ones(3), np.ones(3), bins=10).counts.tolist() == [1, 1, 1], "never an empty bin"


def test_a_calibrated_sigma_has_nominal_coverage_small_uce_and_the_best_nll(calibrated):
    sigma, error = calibrated
    for p, covered in interval_coverage(sigma, error, (0.5, 0.9)).items():
        assert covered == pytest.approx(p, abs=0.01)
    assert uce(sigma, error) < 0.01 * sigma.mean()
    assert uce(2 * sigma, error) == pytest.approx(sigma.mean(), rel=0.02), "twice σ overstates |ε| by σ on average"
    nll = nll_laplace(sigma, error)
    assert nll < nll_laplace(2 * sigma, error) and nll < nll_laplace(sigma / 2, error)
    assert interval_coverage(sigma / 2, error, (0.5,))[0.5] == pytest.approx(1 - 2 ** -0.5, abs=0.01), "1 − exp(−ln2 / 2)"


def test_aurc_by_hand_and_oracle():
    error = np.array([1.0, 3.0, 2.0])
    perfect = aurc(np.array([0.9, 0.1, 0.5]), error)  # keeps 1, then 2, then 3
    assert perfect.risk.tolist() == [1.0, 1.5, 2.0] and perfect.coverage.tolist() == pytest.approx([1 / 3, 2 / 3, 1])
    assert perfect.aurc == pytest.approx(1.5) and perfect.aurc == perfect.oracle_aurc
    worst = aurc(np.array([0.1, 0.9, 0.5]), error)  # keeps 3, then 2, then 1
    assert worst.risk.tolist() == [3.0, 2.5, 2.0] and worst.aurc == pytest.approx(2.5) and worst.oracle_aurc == pytest.approx(1.5)
    rng = np.random.default_rng(1)
    frame_error = rng.uniform(size=500)
    assert aurc(-frame_error, frame_error).aurc == pytest.approx(aurc(rng.uniform(size=500), frame_error).oracle_aurc)


def test_reliability_and_risk_coverage_plots_are_rgb_images(calibrated):
    sigma, error = calibrated
    points = reliability(sigma, error)
    image = reliability_plot({k: v.tolist() for k, v in points._asdict().items()}, uce(sigma, error), "calibrated")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.std() > 0
    curve = aurc(-error[:100], error[:100])
    image = risk_coverage_plot(curve.coverage.tolist(), curve.risk.tolist(), curve.oracle_risk.tolist(), curve.aurc, "frames")
    assert image.dtype == np.uint8 and image.shape[2] == 3


def test_the_suite_meter_averages_the_new_metrics_over_frames():
    from julnet.evaluation.result import METRIC_DIRECTIONS
    from julnet.evaluation.suite import Judges, _Meter
    from julnet.evaluation.unavailable import Unavailable

    gen = torch.Generator().manual_seed(3)
    generated, target = torch.rand(2, 3, 8, 8, generator=gen), torch.rand(2, 3, 8, 8, generator=gen)
    sigma, error_pred = torch.rand(2, 1, 8, 8, generator=gen) * 0.4 + 0.01, torch.rand(2, 1, 8, 8, generator=gen)
    none = Unavailable("not in this test")
    meter = _Meter(Judges(none, none, none), steps=4, max_offset=1, window=5)
    meter.add(generated, target, sigma, error_pred, torch.zeros(2, 1), torch.ones(2, dtype=torch.bool), 0)
    metrics, _, _, _ = meter.results()
    error = (generated - target).abs().mean(dim=1, keepdim=True)
    per_frame = list(zip(sigma, error, strict=True))
    assert metrics["nll_sigma"] == pytest.approx(np.mean([nll_laplace(s, e) for s, e in per_frame]), rel=1e-9)
    assert metrics["uce_sigma"] == pytest.approx(np.mean([uce(s, e) for s, e in per_frame]), rel=1e-9)
    assert metrics["aurg_sigma"] == pytest.approx(np.mean([aurg(s, e, 4) for s, e in per_frame]), rel=1e-9)
    assert metrics["aurg_error_pred"] == pytest.approx(np.mean([aurg(p, e, 4) for p, e in zip(error_pred, error, strict=True)]), rel=1e-9)
    for p in (0.5, 0.9):
        pooled = interval_coverage(sigma, error, (p,))[p]
        assert metrics[f"coverage{round(p * 100)}_gap_sigma"] == pytest.approx(abs(pooled - p), abs=1e-12)
    top, left, side = mouth_box(8, 8)
    mouth_pred, mouth_error = (x[:, 0, top : top + side, left : left + side].double().mean(dim=(1, 2)).numpy() for x in (error_pred, error))
    confidence = np.exp(-mouth_pred / 0.05)  # julnet generate's per-frame confidence, any scale
    assert metrics["aurc_confidence"] == pytest.approx(aurc(confidence, mouth_error).aurc, rel=1e-9)
    assert metrics["eaurc_confidence"] == pytest.approx(metrics["aurc_confidence"] - np.mean(np.cumsum(np.sort(mouth_error)) / [1, 2]), rel=1e-9)
    assert set(metrics) <= METRIC_DIRECTIONS.keys()
