from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from julnet.config import Config, HistogramConfig, LossWeights, UncertaintyConfig
from julnet.data.synthetic import SyntheticFaces
from julnet.face import mouth_box
from julnet.losses.adversarial import lsgan_discriminator, lsgan_generator
from julnet.losses.perceptual import perceptual_loss
from julnet.losses.sync import mouth_clip, sync_loss, syncnet_contrastive_loss
from julnet.losses.total import total_loss
from julnet.losses.uncertainty import bin_centres, error_map, histogram_kl, laplace_nll, soft_histogram, uncertainty_loss
from julnet.models.syncnet import SyncNet
from julnet.models.uncertainty import UncertaintyOutput
from julnet.models.vgg import VGG19Features


@pytest.fixture(scope="module")
def realistic_error() -> torch.Tensor:
    """A heavy-tailed error map: blurred faces whose mouths were painted from another frame."""
    from julnet.config import load_config

    cfg = load_config("tiny")
    stage = cfg.train.stages[0]
    batch = SyntheticFaces(cfg, stage).batch(3)
    target = batch["target"]
    generated = F.avg_pool2d(target, 3, 1, 1)
    top, left, side = mouth_box(stage.height, stage.width)
    wrong_mouth = F.avg_pool2d(batch["references"][:, :3], 5, 1, 2)
    generated[..., top : top + side, left : left + side] = wrong_mouth[..., top : top + side, left : left + side]
    noise = 0.01 * torch.randn(generated.shape, generator=torch.Generator().manual_seed(0))
    error = error_map((generated + noise).clamp(0, 1), target)
    x = error.flatten()
    assert ((x - x.mean()) ** 4).mean() / x.var() ** 2 > 6, "fixture must be heavy-tailed (kurtosis well above 3)"
    return error


def _entropy(h: torch.Tensor) -> float:
    return float(-(h * h.clamp_min(1e-12).log()).sum() / torch.log(torch.tensor(float(len(h)))))


def test_error_map_is_eq2_averaged_over_channels():
    gen, tgt = torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    gen[0, :, 0, 0] = torch.tensor([0.3, 0.6, 0.9])
    err = error_map(gen, tgt)
    assert err.shape == (1, 1, 2, 2)
    assert err[0, 0, 0, 0].item() == pytest.approx(0.6) and err[0, 0, 1, 1] == 0


def test_laplace_nll_is_minimised_where_sigma_equals_the_error():
    error = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.01
    tau = torch.zeros_like(error, requires_grad=True)
    opt = torch.optim.Adam([tau], lr=0.05)
    for _ in range(1500):
        opt.zero_grad()
        laplace_nll(error, tau).backward()
        opt.step()
    torch.testing.assert_close(tau.detach().exp(), error, rtol=2e-3, atol=1e-4)
    optimum = laplace_nll(error, error.log())
    for delta in (-0.1, 0.1):
        assert laplace_nll(error, error.log() + delta) > optimum


@pytest.mark.parametrize("bins", [9, 10, 11, 12, 13])
@pytest.mark.parametrize("spacing", ["linear", "log"])
@pytest.mark.parametrize("assignment", ["normalized", "softmax"])
def test_histograms_are_distributions_and_kl_behaves(realistic_error, bins, spacing, assignment):
    cfg = HistogramConfig(bins=bins, spacing=spacing, assignment=assignment)
    log_sigma = (realistic_error + 0.05).log().detach().requires_grad_(True)
    kl, h_err, h_sig = histogram_kl(realistic_error, log_sigma.exp(), cfg)
    for h in (h_err, h_sig):
        assert h.shape == (bins,) and h.min() >= 0
        assert h.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert kl.item() >= 0
    kl.backward()
    assert torch.isfinite(log_sigma.grad).all() and log_sigma.grad.abs().sum() > 0
    same, _, _ = histogram_kl(realistic_error, realistic_error, cfg)
    assert abs(same.item()) < 1e-6


@pytest.mark.parametrize("spacing", ["linear", "log"])
def test_bin_centres_run_from_the_mean_to_alpha_max_stds(realistic_error, spacing):
    cfg = HistogramConfig(bins=11, alpha_max=3.0, spacing=spacing)
    c = bin_centres(realistic_error, cfg)
    u, s = realistic_error.mean(), realistic_error.std()
    assert c[0].item() == pytest.approx(u.item()) and c[-1].item() == pytest.approx((u + 3 * s).item(), rel=1e-5)
    gaps = c.diff()
    assert (gaps > 0).all()
    if spacing == "log":
        assert gaps[0] < gaps[-1], "log spacing is denser near the mean"


def test_default_histogram_carries_information_on_a_heavy_tailed_error(realistic_error):
    """The normalised assignment (default) gives a clear shape, not the flat histogram of eq. 7's trap."""
    cfg = HistogramConfig()
    h = soft_histogram(realistic_error, bin_centres(realistic_error, cfg), cfg)
    assert cfg.assignment == "normalized"
    assert _entropy(h) < 0.6
    assert h[0] > 0.5 and h.max() / h.min() > 10


def test_literal_eq7_with_unit_kernel_scale_is_nearly_flat(realistic_error):
    """Why the literal softmax form is not the default: with k1 = 1 it spreads every value over all bins."""
    cfg = HistogramConfig(assignment="softmax", kernel_scale=1.0)
    h = soft_histogram(realistic_error, bin_centres(realistic_error, cfg), cfg)
    assert _entropy(h) > 0.95


def test_kl_grows_as_sigma_is_scaled_away_from_the_error(realistic_error):
    cfg = HistogramConfig()
    kl = {s: histogram_kl(realistic_error, realistic_error * s, cfg)[0].item() for s in (0.25, 0.5, 0.8, 1, 1.25, 2, 4)}
    assert kl[1] < 1e-6
    assert kl[1] < kl[1.25] < kl[2] < kl[4]
    assert kl[1] < kl[0.8] < kl[0.5] < kl[0.25]


def test_bin_statistics_gradient_switch(realistic_error):
    err = realistic_error.clone().requires_grad_(True)
    for detach in (True, False):
        c = bin_centres(err, HistogramConfig(detach_stats=detach))
        assert c.requires_grad is not detach


def test_uncertainty_loss_parts_and_weights():
    gen = torch.rand(2, 3, 16, 16, requires_grad=True)
    tgt = torch.rand(2, 3, 16, 16)
    out = UncertaintyOutput(error_pred=torch.rand(2, 1, 16, 16), log_sigma=torch.zeros(2, 1, 16, 16, requires_grad=True))
    hist = HistogramConfig()
    parts = uncertainty_loss(gen, tgt, out, UncertaintyConfig(), hist)
    assert set(parts) >= {"un", "un1", "un2", "error_pred"}
    expected = parts["un1"] + parts["un2"] + parts["error_pred"]
    assert parts["un"].item() == pytest.approx(expected.item())
    only_un1 = uncertainty_loss(gen, tgt, out, UncertaintyConfig(un2_weight=0, error_pred_weight=0), hist)
    assert only_un1["un"].item() == pytest.approx(parts["un1"].item())
    parts["un"].backward()
    assert gen.grad.abs().sum() > 0, "the uncertainty loss also trains the generator (joint learning)"


@pytest.mark.parametrize(
    ("real", "fake", "l_g", "l_d"),
    [(1.0, 0.0, 1.0, 0.0), (0.0, 1.0, 0.0, 1.0), (0.5, 0.5, 0.25, 0.25), (1.0, 1.0, 0.0, 0.5)],
)
def test_lsgan_textbook_values(real, fake, l_g, l_d):
    r, f = torch.full((4, 1, 3, 3), real), torch.full((4, 1, 3, 3), fake)
    assert lsgan_generator(f).item() == pytest.approx(l_g)
    assert lsgan_discriminator(r, f).item() == pytest.approx(l_d)


def test_perceptual_loss_is_zero_for_equal_images_and_grows_with_distortion():
    torch.manual_seed(0)
    vgg = VGG19Features()
    img = torch.rand(1, 3, 32, 32)
    assert perceptual_loss(vgg, img, img).item() == 0
    small = perceptual_loss(vgg, (img + 0.02 * torch.randn_like(img)).clamp(0, 1), img)
    large = perceptual_loss(vgg, (img + 0.2 * torch.randn_like(img)).clamp(0, 1), img)
    assert 0 < small < large
    # Summed, a second scale adds its terms; averaged (the default), it need not.
    assert perceptual_loss(vgg, img, img * 0.9, 2, "sum") > perceptual_loss(vgg, img, img * 0.9, 1, "sum")


def test_sync_losses(tiny: Config):
    torch.manual_seed(0)
    net = SyncNet(tiny)
    frames = torch.rand(2, 5, 3, 104, 80)
    mouths = mouth_clip(frames, tiny.syncnet.mouth_size)
    assert mouths.shape == (2, 15, tiny.syncnet.mouth_size, tiny.syncnet.mouth_size)
    audio = torch.randn(2, tiny.audio.dim, 5)
    score = net(audio, mouths)
    assert sync_loss(net, audio, frames).item() == pytest.approx(((score - 1) ** 2).mean().item(), rel=1e-5)
    labels = torch.tensor([1.0, 0.0])
    expected = -(torch.log(score[0].clamp(1e-6, 1 - 1e-6)) + torch.log(1 - score[1].clamp(1e-6, 1 - 1e-6))) / 2
    assert syncnet_contrastive_loss(net, audio, mouths, labels).item() == pytest.approx(expected.item(), rel=1e-4)


def test_syncnet_learns_to_tell_in_sync_from_shifted_pairs(tiny: Config):
    """Contrastive training separates matching and mismatched audio on synthetic faces."""
    torch.manual_seed(0)
    stage = tiny.train.stages[1].model_copy(update={"batch_size": 8})
    data = SyntheticFaces(tiny, stage)
    net = SyncNet(tiny)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    batch = data.batch(0)
    mouths = mouth_clip(batch["target"], tiny.syncnet.mouth_size)
    audio = batch["audio"][:, 2]
    shifted = audio.roll(1, dims=0)
    labels = torch.cat([torch.ones(8), torch.zeros(8)])
    for _ in range(60):
        opt.zero_grad()
        loss = syncnet_contrastive_loss(net, torch.cat([audio, shifted]), torch.cat([mouths, mouths]), labels)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        assert net(audio, mouths).mean() > net(shifted, mouths).mean() + 0.2


def test_total_loss_is_eq14():
    parts = {"un": torch.tensor(2.0), "ad": torch.tensor(3.0), "pe": torch.tensor(0.5), "sync": torch.tensor(4.0)}
    w = LossWeights()
    assert total_loss(parts, w).item() == pytest.approx(1.0 * 2 + 1.0 * 3 + 10.0 * 0.5 + 0.1 * 4)
    del parts["sync"]
    assert total_loss(parts, w).item() == pytest.approx(10.0)
