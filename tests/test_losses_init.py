"""L_un from the first step (issue 13): σ's initialisation, L_un2's gradient beyond the bins, where the
uncertainty gradients go (detach switches), and the perceptual loss's reduction."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from julnet.config import Config, PerceptualConfig, UncertaintyConfig, load_config
from julnet.data.synthetic import SyntheticFaces
from julnet.face import mouth_box
from julnet.losses.perceptual import perceptual_loss
from julnet.losses.uncertainty import bin_centres, error_map, histogram_kl, histogram_loss, tail_mismatch, uncertainty_loss
from julnet.models.uncertainty import DEFAULT_INIT_SIGMA, UncertaintyModule, UncertaintyOutput
from julnet.models.vgg import VGG19Features
from julnet.models.talking_face import build_uncertainty
from julnet.models.build import build_models

# Adam's step size for the 50-step tests: σ moves about this much in log units per step, so 50 steps cover the
# ~2 log units from σ ≈ 1 down to the bins of a 0.03-mean error map.
LR = 1e-3


@pytest.fixture(scope="module")
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    """(generated, target) with a realistic error (mean ≈ 0.03, heavy-tailed): blurred faces, mouths from another frame."""
    cfg = load_config("tiny")
    stage = cfg.train.stages[0]
    batch = SyntheticFaces(cfg, stage).batch(3)
    scale = 255.0 if batch["target"].dtype == torch.uint8 else 1.0
    target = batch["target"].float() / scale
    generated = F.avg_pool2d(target, 3, 1, 1)
    top, left, side = mouth_box(stage.height, stage.width)
    wrong_mouth = F.avg_pool2d(batch["references"][:, :3].float() / scale, 5, 1, 2)
    generated[..., top : top + side, left : left + side] = wrong_mouth[..., top : top + side, left : left + side]
    noise = 0.01 * torch.randn(generated.shape, generator=torch.Generator().manual_seed(0))
    generated = (generated + noise).clamp(0, 1)
    assert 0.02 < error_map(generated, target).mean() < 0.06
    return generated, target


def _cfg(*overrides: str) -> Config:
    return load_config("tiny", ["un.use_features=false", *overrides])


def _module(cfg: Config) -> UncertaintyModule:
    torch.manual_seed(0)
    return build_uncertainty(cfg, 0)


def test_sigma_starts_at_the_configured_typical_error(pair):
    generated, _ = pair
    assert DEFAULT_INIT_SIGMA == UncertaintyConfig().init_sigma
    for init in (0.05, 0.2):
        module = _module(_cfg(f"un.init_sigma={init}"))
        assert module.log_sigma_head.bias.item() == pytest.approx(math.log(init))
        with torch.no_grad():
            sigma = module(generated).log_sigma.exp()
        assert init / 2 < sigma.median() < init * 2
    with pytest.raises(ValueError, match="init_sigma"):
        UncertaintyConfig(init_sigma=1e-6)  # log(1e-6) < log_sigma_min = -10


def test_l_un2_has_a_gradient_at_init_and_a_small_step_lowers_the_kl(pair):
    """At the default initialisation, −∂L_un2/∂τ moves σ's histogram toward ε's; σ ≈ 1 (the old init) had none."""
    generated, target = pair
    cfg = _cfg()
    error = error_map(generated, target)
    with torch.no_grad():
        tau = _module(cfg)(generated).log_sigma
    tau.requires_grad_(True)
    un2, kl, _ = histogram_loss(error, tau.exp(), cfg.hist)
    (grad,) = torch.autograd.grad(un2, tau)
    assert (grad != 0).float().mean() > 0.5, "most pixels' τ get a gradient"
    for size in (0.01, 0.03, 0.1):  # a step of `size` in log σ at the steepest pixel
        stepped = (tau - size * grad / grad.abs().max()).detach()
        assert histogram_kl(error, stepped.exp(), cfg.hist)[0] < kl

    # The old init, σ ≈ 1, lies above every bin: eq. 8 alone has no usable gradient (~1e-29, far below Adam's eps),
    # the tail term has one.
    with torch.no_grad():
        tau_one = _module(_cfg("un.init_sigma=1.0"))(generated).log_sigma
    assert (tau_one.exp() > bin_centres(error, cfg.hist)[-1]).all()
    tau_one.requires_grad_(True)
    (flat,) = torch.autograd.grad(histogram_kl(error, tau_one.exp(), cfg.hist)[0], tau_one)
    assert flat.abs().max() < 1e-20
    (pull,) = torch.autograd.grad(histogram_loss(error, tau_one.exp(), cfg.hist)[0], tau_one)
    assert (pull > 0).all() and pull.min() > 1e-8, "every σ above the bins is pulled down"


def test_untrained_generator_gets_a_kl_lowering_gradient_too(tiny: Config):
    """An untrained generator errs far more than init_sigma (ε ≈ 0.2, σ below the bins): still a useful gradient."""
    models = build_models(tiny, pretrained=False)
    batch = SyntheticFaces(tiny, tiny.train.stages[0]).batch(0)
    scale = 255.0 if batch["target"].dtype == torch.uint8 else 1.0
    with torch.no_grad():
        gen, unc = models.talking_face(batch["source"].float() / scale, batch["references"].float() / scale, batch["audio"])
        tau = unc.log_sigma
    error = error_map(gen.image, batch["target"].float() / scale)
    assert (tau.exp() < bin_centres(error, tiny.hist)[0]).all()
    tau.requires_grad_(True)
    un2, kl, _ = histogram_loss(error, tau.exp(), tiny.hist)
    (grad,) = torch.autograd.grad(un2, tau)
    assert (grad < 0).all(), "every σ below the bins is pushed up"
    stepped = (tau - 0.1 * grad / grad.abs().max()).detach()
    assert histogram_kl(error, stepped.exp(), tiny.hist)[0] < kl


def test_tail_term_is_zero_for_equal_inputs_and_grows_beyond_the_bins(pair):
    generated, target = pair
    error = error_map(generated, target)
    centres = bin_centres(error, _cfg().hist)
    assert tail_mismatch(error, error, centres).item() == 0
    far = [tail_mismatch(error, error * s, centres).item() for s in (2, 5, 20, 100)]
    assert far == sorted(far) and far[0] > 0
    below = [tail_mismatch(error, error / s, centres).item() for s in (2, 5, 20)]
    assert below == sorted(below) and below[0] > 0


def _train_un2_alone(generated: torch.Tensor, target: torch.Tensor, cfg: Config, steps: int = 50) -> tuple[UncertaintyModule, list[float]]:
    """`steps` Adam steps of the uncertainty module alone on one batch, with L_un1 and the ε̂ term off."""
    module = _module(cfg)
    opt = torch.optim.Adam(module.parameters(), lr=LR)
    kls = []
    for _ in range(steps):
        parts = uncertainty_loss(generated, target, module(generated), cfg.un, cfg.hist)
        kls.append(parts["un2_kl"].item())
        opt.zero_grad()
        parts["un"].backward()
        opt.step()
    return module, kls


def test_without_l_un1_sigma_comes_down_into_the_bins_within_50_steps(pair):
    """The paper's "w/o L_un1" row: σ starting above every bin (σ ≈ 1) trains on L_un2 alone."""
    generated, target = pair
    error = error_map(generated, target)
    centres = bin_centres(error, _cfg().hist)
    above_err = (error > centres[-1]).float().mean().item()

    off = ("un.un1_weight=0", "un.error_pred_weight=0", "un.init_sigma=1.0")
    module, kls = _train_un2_alone(generated, target, _cfg(*off))
    with torch.no_grad():
        sigma = module(generated).log_sigma.exp()
    assert (sigma > centres[-1]).float().mean() <= above_err + 0.05, "no more σ above the bins than ε has"
    assert sigma.median() < centres[-1], "σ's bulk is in (or, like ε's, below) the bins' range"
    assert kls[-1] < 0.25 * kls[0], "the KL left its ceiling"

    # Eq. 8 alone (tail_weight 0): the same 50 steps leave σ where it was.
    frozen, frozen_kls = _train_un2_alone(generated, target, _cfg(*off, "hist.tail_weight=0"))
    with torch.no_grad():
        assert (frozen(generated).log_sigma.exp() > centres[-1]).all()
    assert frozen_kls[-1] == pytest.approx(frozen_kls[0])


def test_without_l_un1_sigma_below_the_bins_is_lifted(pair):
    generated, target = pair
    cfg = _cfg("un.un1_weight=0", "un.error_pred_weight=0", "un.init_sigma=0.001")
    error = error_map(generated, target)
    centres = bin_centres(error, cfg.hist)
    before = _module(cfg)
    module, _ = _train_un2_alone(generated, target, cfg)
    with torch.no_grad():
        tails = [tail_mismatch(error, m(generated).log_sigma.exp(), centres).item() for m in (before, module)]
    assert tails[1] < 0.1 * tails[0]


@pytest.mark.parametrize("detach", [True, False])
def test_detach_error_in_kl_keeps_l_un2_off_the_generated_image(detach: bool):
    torch.manual_seed(0)
    generated = (0.5 + 0.1 * torch.randn(2, 3, 16, 16)).requires_grad_(True)
    target = torch.full((2, 3, 16, 16), 0.5)
    log_sigma = torch.full((2, 1, 16, 16), math.log(0.08), requires_grad=True)
    out = UncertaintyOutput(error_pred=torch.rand(2, 1, 16, 16), log_sigma=log_sigma)
    un = UncertaintyConfig(un1_weight=0, error_pred_weight=0, detach_error_in_kl=detach)
    parts = uncertainty_loss(generated, target, out, un, _cfg().hist)
    parts["un"].backward()
    assert log_sigma.grad.abs().sum() > 0, "L_un2 trains σ either way"
    reached = generated.grad is not None and generated.grad.abs().sum() > 0
    assert reached is not detach
    # L_un1 still reaches the generator when the KL is detached (joint learning, eq. 4).
    generated.grad = None
    with_un1 = uncertainty_loss(generated, target, out, UncertaintyConfig(detach_error_in_kl=detach), _cfg().hist)
    with_un1["un"].backward()
    assert generated.grad.abs().sum() > 0


@pytest.mark.parametrize(("use_features", "detach_image", "reaches_generator"), [
    (False, True, False),
    (False, False, True),
    (True, True, True),  # the features still carry gradient unless detach_features
])
def test_detach_image_cuts_the_module_input_from_the_generator(tiny: Config, use_features: bool, detach_image: bool, reaches_generator: bool):
    cfg = tiny.with_values({"un.use_features": use_features, "un.detach_image": detach_image})
    models = build_models(cfg, pretrained=False)
    batch = SyntheticFaces(cfg, cfg.train.stages[0]).batch(0)
    scale = 255.0 if batch["target"].dtype == torch.uint8 else 1.0
    face = models.talking_face
    gen = face.generator(batch["source"].float() / scale, batch["references"].float() / scale, batch["audio"])
    gen.image.retain_grad()
    out = face.uncertainty(gen.image, gen.features if use_features else None)
    (out.log_sigma.square().mean() + out.error_pred.mean()).backward()  # only the module's outputs, no ε
    grads = [p.grad for p in face.generator.parameters()]
    reached = any(g is not None and g.abs().sum() > 0 for g in grads)
    assert reached is reaches_generator
    image_grad = gen.image.grad
    assert (image_grad is not None and image_grad.abs().sum() > 0) is not detach_image
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in face.uncertainty.parameters())


def test_perceptual_mean_is_the_sum_over_its_terms():
    torch.manual_seed(0)
    vgg = VGG19Features()
    generated, target = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    assert PerceptualConfig().reduction == "mean"
    for scales in (1, 2):
        total = perceptual_loss(vgg, generated, target, scales, "sum")
        mean = perceptual_loss(vgg, generated, target, scales, "mean")
        assert mean.item() == pytest.approx(total.item() / (5 * scales), rel=1e-6)
    assert perceptual_loss(vgg, generated, target).item() == pytest.approx(perceptual_loss(vgg, generated, target, 2, "sum").item() / 10)
