from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from julnet.config import Config, PretrainedWeights, load_config
from julnet.models.blocks import NarrowConv2d, UpBlock, fold_batch_norm
from julnet.models.generator import AdaAT, AffineParams, Generator
from julnet.models.syncnet import SyncNet
from julnet.models.uncertainty import Pointwise, UncertaintyModule
from julnet.models.vgg import VGG19Features
from julnet.pretrained import MissingWeightsError, load_into, sha256_of
from julnet.models.talking_face import build_talking_face
from julnet.models.build import build_models


def _params(b: int, c: int, scale=1.0, rotation=0.0, tx=0.0, ty=0.0) -> AffineParams:
    return AffineParams(
        scale=torch.full((b, c), scale),
        rotation=torch.full((b, c), rotation),
        translation=torch.tensor([tx, ty]).expand(b, c, 2).clone(),
    )


def test_adaat_identity_returns_the_input_exactly():
    features = torch.randn(2, 7, 13, 10)
    out = AdaAT()(features, _params(2, 7))
    torch.testing.assert_close(out, features, atol=1e-5, rtol=0)


@pytest.mark.parametrize("k", [1, 3])
def test_adaat_translation_moves_by_whole_pixels(k: int):
    features = torch.randn(1, 4, 12, 16)
    w, h = features.shape[-1], features.shape[-2]
    out = AdaAT()(features, _params(1, 4, tx=2 * k / (w - 1)))
    torch.testing.assert_close(out[..., : w - k], features[..., k:], atol=1e-5, rtol=0)
    assert out[..., w - k :].abs().max() < 1e-5, "pixels sampled from outside the map are zero"
    out = AdaAT()(features, _params(1, 4, ty=-2 * k / (h - 1)))
    torch.testing.assert_close(out[..., k:, :], features[..., : h - k, :], atol=1e-5, rtol=0)


def test_adaat_channels_move_independently():
    features = torch.randn(1, 2, 9, 9)
    params = _params(1, 2)
    params.rotation[0, 1] = math.pi / 2
    out = AdaAT()(features, params)
    torch.testing.assert_close(out[:, 0], features[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[0, 1], torch.rot90(features[0, 1], k=1, dims=(0, 1)), atol=1e-5, rtol=0)


def test_generator_maps_inputs_to_an_image_and_features(tiny: Config):
    g = Generator(tiny).eval()
    h, w = 104, 80
    out = g(torch.rand(2, 3, h, w), torch.rand(2, 15, h, w), torch.randn(2, tiny.audio.dim, 5))
    assert out.image.shape == (2, 3, h, w)
    assert out.features.shape == (2, tiny.generator.decoder_channels, h, w)
    assert 0 <= out.image.min() and out.image.max() <= 1


def test_generator_output_depends_on_audio_and_references(tiny: Config):
    g = Generator(tiny).eval()
    refs = torch.rand(1, 15, 104, 80, requires_grad=True)
    audio = torch.randn(1, tiny.audio.dim, 5, requires_grad=True)
    g(torch.rand(1, 3, 104, 80), refs, audio).image.sum().backward()
    assert audio.grad.abs().sum() > 0 and refs.grad.abs().sum() > 0


@pytest.mark.parametrize("preset", ["tiny", "wav2lip-tiny"])
def test_folding_batch_norms_keeps_the_outputs_and_leaves_the_model_trainable(preset: str):
    cfg = load_config(preset)
    face = build_talking_face(cfg).train()
    for norm in (m for m in face.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))):
        norm.running_mean.normal_(), norm.running_var.uniform_(0.5, 2.0), norm.weight.data.uniform_(0.5, 2.0), norm.bias.data.normal_()
    h, w = (cfg.train.stages[0].height, cfg.train.stages[0].width)
    inputs = (torch.rand(2, 3, h, w), torch.rand(2, 3 * cfg.generator.num_references, h, w), torch.randn(2, cfg.audio.dim, 5))
    folded = fold_batch_norm(face)
    norms = lambda m: sum(isinstance(x, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) for x in m.modules())  # noqa: E731
    assert 0 < norms(folded) < norms(face) and face.training and not folded.training
    assert fold_batch_norm(folded) is folded, "folding a folded model copied it again"
    with torch.no_grad():
        expected, got = face.eval()(*inputs), folded(*inputs)
    torch.testing.assert_close(got.generated.image, expected.generated.image, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(got.uncertainty.log_sigma, expected.uncertainty.log_sigma, atol=2e-5, rtol=1e-4)


def test_uncertainty_module_plugs_into_any_generator():
    """Image only (e.g. Wav2Lip's output): no feature map needed; heads have the right ranges."""
    # σ starts at 1 (τ = 0, mid-range) so the clamp to ±3 does not cut the gradient as the default log 0.05 ≈ −3 would.
    module = UncertaintyModule(feature_channels=0, hidden=8, log_sigma_range=(-3.0, 3.0), init_sigma=1.0)
    image = torch.rand(2, 3, 24, 20, requires_grad=True)
    out = module(image)
    assert out.error_pred.shape == out.log_sigma.shape == (2, 1, 24, 20)
    assert out.error_pred.min() >= 0
    assert -3.0 <= out.log_sigma.min() and out.log_sigma.max() <= 3.0
    out.log_sigma.sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_pointwise_layer_is_a_1x1_conv_over_its_inputs_concatenated(memory_format: torch.memory_format):
    torch.manual_seed(0)
    layer = Pointwise(3 + 8, 5)
    conv = torch.nn.Conv2d(3 + 8, 5, 1)
    conv.load_state_dict(layer.state_dict())  # the same parameters under the same keys
    image, features = (torch.randn(2, c, 7, 6).contiguous(memory_format=memory_format).requires_grad_() for c in (3, 8))
    out, expected = layer([image, features]), conv(torch.cat([image, features], 1))
    torch.testing.assert_close(out, expected)
    assert out.is_contiguous(memory_format=memory_format), "the output keeps the inputs' memory format"
    grads = torch.autograd.grad(out.square().sum(), [image, features, layer.weight, layer.bias])
    expected_grads = torch.autograd.grad(expected.square().sum(), [image, features, conv.weight, conv.bias])
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="expected 11 input channels in all, got \\[3, 4\\]"):
        layer([image, features[:, :4]])


@pytest.mark.parametrize("kernel", [1, 3, 7])
def test_narrow_conv_equals_a_same_size_conv2d(kernel: int):
    torch.manual_seed(0)
    layer = NarrowConv2d(6, 3, kernel)
    conv = torch.nn.Conv2d(6, 3, kernel, padding=kernel // 2)
    conv.load_state_dict(layer.state_dict())  # the same parameters under the same keys
    x = torch.randn(2, 6, 11, 8, requires_grad=True)  # batch 2, odd and even sides, borders within the kernel
    out, expected = layer(x), conv(x)
    assert out.shape == expected.shape == (2, 3, 11, 8)
    torch.testing.assert_close(out, expected)
    weights = torch.randn_like(out)  # a loss that tells the taps and pixels apart
    grads = torch.autograd.grad((out * weights).sum(), [x, layer.weight, layer.bias])
    for got, want in zip(grads, torch.autograd.grad((expected * weights).sum(), [x, conv.weight, conv.bias])):
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="odd kernel size"):
        NarrowConv2d(6, 3, 4)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_up_block_equals_nearest_upsampling_then_a_3x3_conv_block(memory_format: torch.memory_format):
    torch.manual_seed(0)
    block = UpBlock(6, 5)
    layers = torch.nn.Sequential(*(copy.deepcopy(layer) for layer in block))  # the listed layers, run one by one
    assert [type(m) for m in layers] == [torch.nn.Upsample, torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.ReLU]
    x = torch.randn(2, 6, 7, 4).contiguous(memory_format=memory_format).requires_grad_()  # odd and even sides
    out, expected = block(x), layers(x)
    assert out.shape == (2, 5, 14, 8) and out.is_contiguous(memory_format=memory_format)
    torch.testing.assert_close(out, expected)
    weights = torch.randn_like(out)  # a loss that tells the phases and pixels apart
    conv, twin = block[1], layers[1]
    grads = torch.autograd.grad((out * weights).sum(), [x, conv.weight, conv.bias])
    for got, want in zip(grads, torch.autograd.grad((expected * weights).sum(), [x, twin.weight, twin.bias])):
        torch.testing.assert_close(got, want)
    block.eval(), layers.eval()
    with torch.no_grad():  # folded for inference, the block keeps computing the same function
        torch.testing.assert_close(fold_batch_norm(block)(x), layers(x))


def test_the_talking_face_model_traces_as_one_graph_for_torch_compile(tiny: Config):
    """train.compile compiles the whole model only if dynamo traces it without a break (an `as_strided` taking
    `storage_offset()` once split the up-blocks into three graphs)."""
    model = build_talking_face(tiny)
    refs, size = tiny.generator.num_references, (104, 80)
    inputs = (torch.rand(1, 3, *size), torch.rand(1, 3 * refs, *size), torch.randn(1, tiny.audio.dim, tiny.audio.window))
    explained = torch._dynamo.explain(model)(*inputs)
    assert explained.graph_break_count == 0, [str(b.reason).splitlines()[0] for b in explained.break_reasons]


def test_uncertainty_module_feature_detach_switch():
    features = torch.rand(1, 5, 8, 8, requires_grad=True)
    for detach, expect_grad in ((False, True), (True, False)):
        features.grad = None
        module = UncertaintyModule(feature_channels=5, hidden=4, detach_features=detach)
        module(torch.rand(1, 3, 8, 8), features).log_sigma.sum().backward()
        assert (features.grad is not None) == expect_grad


def test_syncnet_score_is_in_unit_interval(tiny: Config):
    net = SyncNet(tiny).eval()
    m = tiny.syncnet.mouth_size
    score = net(torch.randn(3, tiny.audio.dim, 5), torch.rand(3, 15, m, m))
    assert score.shape == (3,)
    assert 0 <= score.min() and score.max() <= 1


# The public ImageNet vgg19 release's conv layers up to relu5_1: index -> (out, in) channels, written out independently.
_PUBLIC_VGG19 = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256), 14: (256, 256),
                      16: (256, 256), 19: (512, 256), 21: (512, 512), 23: (512, 512), 25: (512, 512), 28: (512, 512)}


def _public_vgg19_state() -> dict[str, torch.Tensor]:
    state = {}
    for index, (cout, cin) in _PUBLIC_VGG19.items():
        state[f"features.{index}.weight"] = torch.randn(cout, cin, 3, 3)
        state[f"features.{index}.bias"] = torch.randn(cout)
    for index in (30, 32, 34):  # layers past relu5_1 and the classifier are in the public file; ignored
        state[f"features.{index}.weight"] = torch.randn(1)
    state["classifier.0.weight"] = torch.randn(2, 2)
    return state


def test_vgg_loads_the_public_release_keys_from_a_configured_path_with_checksum(tmp_path: Path):
    state = _public_vgg19_state()
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    vgg = load_into(VGG19Features(), PretrainedWeights(path=str(path), sha256=sha256_of(path)), "VGG-19", "perceptual.vgg")
    assert set(vgg.state_dict()) == {k for k in state if int(k.split(".")[1]) <= 28 and k.startswith("features")}
    torch.testing.assert_close(vgg.features[28].weight, state["features.28.weight"])
    assert not any(p.requires_grad for p in vgg.parameters())
    assert [t.shape[1] for t in vgg(torch.rand(1, 3, 32, 32))] == [64, 128, 256, 512, 512]

    with pytest.raises(MissingWeightsError, match="sha256"):
        load_into(VGG19Features(), PretrainedWeights(path=str(path), sha256="0" * 64), "VGG-19", "perceptual.vgg")


def test_a_narrow_vgg_keeps_the_layout_with_a_fraction_of_the_channels_and_cost():
    """tiny's perceptual.vgg_width=0.25: the same 16 convolutions and taps, a quarter of the channels, ~1/16 the FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    full, narrow = VGG19Features(), VGG19Features(0.25)
    assert len(narrow.features) == len(full.features)
    image = torch.rand(1, 3, 104, 80)
    assert [t.shape[1] for t in narrow(image)] == [16, 32, 64, 128, 128]
    flops = []
    for vgg in (full, narrow):
        with FlopCounterMode(display=False) as counter:
            vgg(image)
        flops.append(counter.get_total_flops())
    assert 12 < flops[0] / flops[1] < 17


def test_missing_pretrained_weights_are_refused_unless_random_init_is_allowed(tmp_path: Path):
    with pytest.raises(MissingWeightsError, match="perceptual.vgg.path"):
        load_into(VGG19Features(), PretrainedWeights(), "VGG-19", "perceptual.vgg")
    with pytest.raises(MissingWeightsError, match="not found"):
        load_into(VGG19Features(), PretrainedWeights(path=str(tmp_path / "nope.pth")), "VGG-19", "perceptual.vgg")
    load_into(VGG19Features(), PretrainedWeights(allow_random_init=True), "VGG-19", "perceptual.vgg")


def test_paper_preset_without_weights_says_which_key_to_set():
    from julnet.config import load_config

    with pytest.raises(MissingWeightsError, match="perceptual.vgg"):
        build_models(load_config("paper"))


def test_registered_and_remote_weights_pass_the_early_check(tmp_path):
    from julnet.config import load_config
    from julnet.pretrained import check_configured

    check_configured(load_config("tiny", ["syncnet.weights.path=models:/julnet-syncnet/3", "perceptual.vgg.path=s3://w/vgg19.pth",
                                          "perceptual.vgg_width=1"]))
    with pytest.raises(MissingWeightsError, match="syncnet.weights.path"):
        check_configured(load_config("tiny", [f"syncnet.weights.path={tmp_path}/missing.pt"]))
