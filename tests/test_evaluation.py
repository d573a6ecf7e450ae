"""Evaluation metrics (julnet.evaluation): PSNR, Fréchet distance, LPIPS-VGG, LSE-D/C, calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from julnet.models.vgg import VGG16_LAYOUT, VGG16_TAPS, VGGTrunk
from scipy import linalg, stats

from julnet.config import PretrainedWeights
from julnet.errors import MissingWeightsError
from julnet.evaluation import (
    LPIPS,
    RunningStatistics,
    Unavailable,
    feature_statistics,
    frechet_distance,
    load_fid_extractor,
    load_lpips,
    lpips_heads_path,
    lse,
    mouth_psnr,
    psnr,
    sparsification,
    spearman,
)
from julnet.evaluation.heldout import reference_table
from julnet.face import mouth_box

# ---------------------------------------------------------------- PSNR


def test_psnr_is_the_mean_of_per_image_psnr():
    target = torch.zeros(2, 3, 8, 8)
    generated = torch.stack([torch.full((3, 8, 8), 0.1), torch.full((3, 8, 8), 0.01)])  # MSE 1e-2 and 1e-4
    assert psnr(generated, target) == pytest.approx(30.0)
    assert psnr(generated[:1], target[:1]) == pytest.approx(20.0)
    assert psnr(target, target) == pytest.approx(100.0)  # MSE floored, stays finite


def test_psnr_mask_and_mouth_region():
    target = torch.rand(2, 3, 104, 80)
    top, left, side = mouth_box(104, 80)
    mouth = torch.zeros(1, 1, 104, 80, dtype=torch.bool)
    mouth[..., top : top + side, left : left + side] = True
    outside = torch.where(mouth, target, (target + 0.1).clamp(0, 1))  # error only outside the mouth
    assert psnr(outside, target, mask=mouth) == pytest.approx(100.0)
    assert mouth_psnr(outside, target) == pytest.approx(100.0)
    inside = torch.where(mouth, 1 - target, target)
    assert psnr(inside, target, mask=~mouth) == pytest.approx(100.0)
    assert mouth_psnr(inside, target) < 10
    assert psnr(inside, target, mask=mouth) == pytest.approx(mouth_psnr(inside, target))


# ---------------------------------------------------------------- Fréchet distance / FID


def _reference_frechet(mu1, s1, mu2, s2):
    """Independent form (pytorch-fid's): the general matrix square root of the product s1 s2."""
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real))


def test_frechet_distance_matches_an_independent_computation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 16))
    b = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16)) * 0.5 + 0.3
    mu1, s1 = feature_statistics(torch.from_numpy(a).float())
    mu2, s2 = feature_statistics(b)
    assert mu1.shape == (16,) and s1.shape == (16, 16) and s1.dtype == np.float64
    assert np.allclose(s2, np.cov(b, rowvar=False))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_reference_frechet(mu1, s1, mu2, s2), rel=1e-6)


def test_streamed_statistics_equal_numpy_over_all_features_at_once():
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(53, 12)) * rng.uniform(0.1, 5, size=12) + 1e4  # a large offset: no cancellation allowed
    streamed = RunningStatistics()
    for rows in (slice(0, 1), slice(1, 9), slice(9, 9), slice(9, 40), slice(40, 53)):
        streamed.add(torch.from_numpy(feats[rows]) if rows.start == 9 else feats[rows])
    mu, sigma = streamed.statistics()
    assert streamed.count == 53 and mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(mu, feats.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match=r"wants \(B, 12\) features"):
        streamed.add(feats[:, :5])
    with pytest.raises(ValueError, match="at least 2 samples, got 1"):
        RunningStatistics().add(feats[:1]).statistics()


def test_frechet_distance_is_zero_for_one_distribution_and_grows_with_a_mean_shift():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(500, 8))
    mu, sigma = feature_statistics(feats)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6
    other = feature_statistics(rng.normal(size=(500, 8)))
    same_law = frechet_distance(mu, sigma, *other)
    shifted = [frechet_distance(mu, sigma, *feature_statistics(feats + c)) for c in (0.5, 1.0, 2.0)]
    assert shifted == pytest.approx([8 * 0.25, 8 * 1.0, 8 * 4.0], abs=1e-6)  # pure shift: ||c||² per dimension
    assert same_law < shifted[0]


def test_frechet_distance_survives_singular_covariances():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 32)), rng.normal(size=(5, 32))  # N < D: rank-deficient
    value = frechet_distance(*feature_statistics(a), *feature_statistics(b))
    assert math.isfinite(value) and value > 0
    assert value == pytest.approx(_reference_frechet(*feature_statistics(a), *feature_statistics(b)), rel=1e-4)


def test_fid_extractor_is_unavailable_only_without_inception():
    missing = load_fid_extractor(PretrainedWeights())
    assert isinstance(missing, Unavailable) and "pt_inception-2015-12-05" in missing.reason
    random_allowed = load_fid_extractor(PretrainedWeights(allow_random_init=True))
    assert isinstance(random_allowed, Unavailable)  # FID never runs on random weights
    assert "evaluation.fid_inception.path" in missing.reason
    with pytest.raises(MissingWeightsError, match="not found at evaluation.fid_inception.path=/weights/pt_inception.pth"):
        load_fid_extractor(PretrainedWeights(path="/weights/pt_inception.pth"))  # configured: used or refused, never skipped


# ---------------------------------------------------------------- LPIPS-VGG

_PUBLIC_VGG16_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


def test_vgg16_trunk_has_the_public_release_keys():
    keys = set(VGGTrunk(VGG16_LAYOUT, VGG16_TAPS).state_dict())
    assert keys == {f"features.{i}.{p}" for i in _PUBLIC_VGG16_CONVS for p in ("weight", "bias")}


def test_lpips_heads_load_from_the_shipped_file():
    path = lpips_heads_path()
    if path is None:
        pytest.skip("the lpips package (pip install --no-deps lpips) is not installed")
    model = LPIPS()
    model.load_heads(path)
    assert [tuple(lin.weight.shape) for lin in model.lins] == [(1, c, 1, 1) for c in (64, 128, 256, 512, 512)]
    assert all(bool((lin.weight >= 0).all()) and float(lin.weight.sum()) > 0 for lin in model.lins)


def test_lpips_is_unavailable_without_vgg16_weights():
    for weights in (PretrainedWeights(), PretrainedWeights(allow_random_init=True)):
        result = load_lpips(weights)
        assert isinstance(result, Unavailable) and "VGG-16" in result.reason


def test_lpips_loads_a_public_vgg16_state_dict(tmp_path):
    if lpips_heads_path() is None:
        pytest.skip("the lpips package (pip install --no-deps lpips) is not installed")
    torch.manual_seed(0)
    state = dict(VGGTrunk(VGG16_LAYOUT, VGG16_TAPS).state_dict())
    state["classifier.0.weight"] = torch.zeros(4, 4)  # the public file also holds the classifier
    torch.save(state, tmp_path / "vgg16.pth")
    model = load_lpips(PretrainedWeights(path=str(tmp_path / "vgg16.pth")))
    assert isinstance(model, LPIPS)
    assert torch.equal(model.net.features[28].weight, state["features.28.weight"])


def test_lpips_properties_on_random_vgg_test_only():
    """TEST ONLY: the VGG-16 trunk is randomly initialised here, so the values mean nothing as a metric."""
    path = lpips_heads_path()
    if path is None:
        pytest.skip("the lpips package (pip install --no-deps lpips) is not installed")
    torch.manual_seed(0)
    model = LPIPS()  # random VGG-16 — never for reported numbers
    model.load_heads(path)
    x = torch.rand(2, 3, 32, 32)
    noise = torch.randn_like(x)
    small, large = (x + 0.05 * noise).clamp(0, 1), (x + 0.3 * noise).clamp(0, 1)
    with torch.no_grad():
        d_small, d_large = model(x, small), model(x, large)
        assert torch.allclose(model(x, x), torch.zeros(2))
        assert torch.allclose(model(small, x), d_small)
    assert d_small.shape == (2,)
    assert bool((d_small > 0).all()) and bool((d_large > d_small).all())


# ---------------------------------------------------------------- LSE-D / LSE-C


def test_lse_matches_a_hand_computation():
    video = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    audio = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.8, 0.6]])
    zero = [0.0, 0.0]

    def dist(u, v):  # torch.nn.functional.pairwise_distance: ||u - v + 1e-6||
        return math.sqrt(sum((a - b + 1e-6) ** 2 for a, b in zip(u, v)))

    vid, aud = video.tolist(), audio.tolist()
    mdist = []
    for k in (-1, 0, 1):
        per_frame = [dist(vid[i], aud[i + k] if 0 <= i + k < 3 else zero) for i in range(3)]
        mdist.append(sum(per_frame) / 3)
    best = min(range(3), key=lambda j: mdist[j])
    result = lse(video, audio, max_offset=1)
    assert result["lse_d"] == pytest.approx(mdist[best], rel=1e-9)
    assert result["lse_c"] == pytest.approx(sorted(mdist)[1] - mdist[best], rel=1e-9)
    assert result["offset"] == 1 - best


@pytest.mark.parametrize("shift", [3, 0, -5])
def test_lse_recovers_a_known_offset(shift):
    generator = torch.Generator().manual_seed(3)
    frames = 40
    video = torch.nn.functional.normalize(torch.rand(frames, 16, generator=generator), dim=1)
    audio = torch.nn.functional.normalize(torch.rand(frames, 16, generator=generator), dim=1)
    for i in range(frames):  # audio at frame i + shift belongs to video frame i
        if 0 <= i + shift < frames:
            audio[i + shift] = video[i]
    result = lse(video, audio)
    assert result["offset"] == -shift  # syncnet_python's sign convention
    assert result["lse_c"] > 0.1
    assert result["lse_d"] < min(lse(video, audio.roll(7, dims=0))["lse_d"], 1.0)


def test_lse_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        lse(torch.rand(10, 4), torch.rand(9, 4))


# ---------------------------------------------------------------- uncertainty calibration


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(4)
    error = np.round(rng.random((2, 1, 16, 16)), 1)  # many ties
    sigma = np.round(error + 0.3 * rng.random(error.shape), 1)
    expected = stats.spearmanr(sigma.ravel(), error.ravel()).statistic
    assert spearman(torch.from_numpy(sigma), torch.from_numpy(error)) == pytest.approx(expected, abs=1e-12)
    assert spearman(error, np.exp(error)) == pytest.approx(1.0)
    assert spearman(error, -error) == pytest.approx(-1.0)
    assert math.isnan(spearman(np.ones(10), np.arange(10.0)))


def test_sparsification_is_zero_for_a_perfect_ranking_and_positive_for_random():
    rng = np.random.default_rng(5)
    error = torch.from_numpy(rng.exponential(size=(2, 1, 20, 20)))
    for sigma in (error, torch.exp(3 * error) + 1, error.sqrt()):  # same ranking as the error
        result = sparsification(sigma, error, steps=20)
        assert abs(result.ause) < 1e-9
        assert np.allclose(result.curve, result.oracle, atol=1e-12)
    result = sparsification(torch.from_numpy(rng.random(error.shape)), error, steps=20)
    assert result.fractions.tolist() == pytest.approx([i / 20 for i in range(20)])
    assert result.curve[0] == pytest.approx(float(error.mean())) and result.oracle[0] == pytest.approx(float(error.mean()))
    assert result.ause > 0.1
    assert bool(np.all(np.diff(result.oracle) <= 1e-12))  # removing the largest errors first only lowers the mean


# ---------------------------------------------------------------- held-out references


@pytest.mark.parametrize("strategy", ["random", "even", "first"])
def test_heldout_references_are_never_faceless_frames(strategy: str):
    usable = np.ones(12, dtype=bool)
    usable[[0, 3, 4, 5, 11]] = False  # "even" over all frames would pick 0 and 11; "first" would pick 0
    table = reference_table(usable, 12, 5, strategy, seed=0)
    assert table.shape == (12, 5)
    assert usable[table].all(), table
    if strategy == "random":
        assert all(i not in row for i, row in enumerate(table)), "a reference is never the target"


def test_heldout_chunk_without_a_face_to_reference_fails_with_one_line():
    for strategy in ("random", "even"):
        with pytest.raises(ValueError, match="no frame with a face"):
            reference_table(np.zeros(6, dtype=bool), 6, 5, strategy, seed=0)
