"""pytorch-fid's FID InceptionV3 (julnet.evaluation.inception) and its loader.

The real weights (pt_inception-2015-12-05-6726825d.pth) cannot be downloaded here. The expected layout below is
written out from pytorch-fid's `fid_inception_v3()` (the reference Inception3 with num_classes=1008,
aux_logits=False, FIDInceptionA/C/E_1/E_2 blocks). The weights the tests load are a seeded random state dict
saved to a file: TEST ONLY, every feature and FID they give is a meaningless number that exercises the path.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from julnet.config import PretrainedWeights
from julnet.errors import MissingWeightsError
from julnet.evaluation import FIDInceptionV3, load_fid_extractor
from julnet.evaluation.inception import FIDInceptionA, FIDInceptionC, FIDInceptionE
from julnet.pretrained import sha256_of


def _a(cin: int, pool: int) -> dict[str, tuple[int, int, int, int]]:
    return {"branch1x1": (64, cin, 1, 1), "branch5x5_1": (48, cin, 1, 1), "branch5x5_2": (64, 48, 5, 5), "branch3x3dbl_1": (64, cin, 1, 1),
            "branch3x3dbl_2": (96, 64, 3, 3), "branch3x3dbl_3": (96, 96, 3, 3), "branch_pool": (pool, cin, 1, 1)}


def _c(c7: int) -> dict[str, tuple[int, int, int, int]]:
    return {"branch1x1": (192, 768, 1, 1), "branch7x7_1": (c7, 768, 1, 1), "branch7x7_2": (c7, c7, 1, 7), "branch7x7_3": (192, c7, 7, 1),
            "branch7x7dbl_1": (c7, 768, 1, 1), "branch7x7dbl_2": (c7, c7, 7, 1), "branch7x7dbl_3": (c7, c7, 1, 7),
            "branch7x7dbl_4": (c7, c7, 7, 1), "branch7x7dbl_5": (192, c7, 1, 7), "branch_pool": (192, 768, 1, 1)}


def _e(cin: int) -> dict[str, tuple[int, int, int, int]]:
    return {"branch1x1": (320, cin, 1, 1), "branch3x3_1": (384, cin, 1, 1), "branch3x3_2a": (384, 384, 1, 3), "branch3x3_2b": (384, 384, 3, 1),
            "branch3x3dbl_1": (448, cin, 1, 1), "branch3x3dbl_2": (384, 448, 3, 3), "branch3x3dbl_3a": (384, 384, 1, 3),
            "branch3x3dbl_3b": (384, 384, 3, 1), "branch_pool": (192, cin, 1, 1)}


# Every conv of pytorch-fid's FID Inception: (out, in, kh, kw); each is followed by a BatchNorm of `out` channels.
PYTORCH_FID_CONVS: dict[str, tuple[int, int, int, int]] = {
    "Conv2d_1a_3x3": (32, 3, 3, 3), "Conv2d_2a_3x3": (32, 32, 3, 3), "Conv2d_2b_3x3": (64, 32, 3, 3),
    "Conv2d_3b_1x1": (80, 64, 1, 1), "Conv2d_4a_3x3": (192, 80, 3, 3),
    **{f"Mixed_5b.{k}": v for k, v in _a(192, 32).items()},
    **{f"Mixed_5c.{k}": v for k, v in _a(256, 64).items()},
    **{f"Mixed_5d.{k}": v for k, v in _a(288, 64).items()},
    "Mixed_6a.branch3x3": (384, 288, 3, 3), "Mixed_6a.branch3x3dbl_1": (64, 288, 1, 1), "Mixed_6a.branch3x3dbl_2": (96, 64, 3, 3),
    "Mixed_6a.branch3x3dbl_3": (96, 96, 3, 3),
    **{f"Mixed_6b.{k}": v for k, v in _c(128).items()},
    **{f"Mixed_6c.{k}": v for k, v in _c(160).items()},
    **{f"Mixed_6d.{k}": v for k, v in _c(160).items()},
    **{f"Mixed_6e.{k}": v for k, v in _c(192).items()},
    "Mixed_7a.branch3x3_1": (192, 768, 1, 1), "Mixed_7a.branch3x3_2": (320, 192, 3, 3), "Mixed_7a.branch7x7x3_1": (192, 768, 1, 1),
    "Mixed_7a.branch7x7x3_2": (192, 192, 1, 7), "Mixed_7a.branch7x7x3_3": (192, 192, 7, 1), "Mixed_7a.branch7x7x3_4": (192, 192, 3, 3),
    **{f"Mixed_7b.{k}": v for k, v in _e(1280).items()},
    **{f"Mixed_7c.{k}": v for k, v in _e(2048).items()},
}
PARAMETERS = 23_850_960  # conv weights + BatchNorm affine + fc (2048 -> 1008)
STATE_VALUES = 23_885_392  # parameters + BatchNorm running mean/var (the release's tensors, counters aside)


def test_convs_table_is_the_published_network():
    assert len(PYTORCH_FID_CONVS) == 94
    convs = sum(math.prod(s) for s in PYTORCH_FID_CONVS.values())
    channels = sum(s[0] for s in PYTORCH_FID_CONVS.values())
    assert convs + 2 * channels + 2048 * 1008 + 1008 == PARAMETERS
    assert PARAMETERS + 2 * channels == STATE_VALUES


def test_state_dict_keys_and_shapes_are_pytorch_fids():
    expected = {"fc.weight": (1008, 2048), "fc.bias": (1008,)}
    for name, shape in PYTORCH_FID_CONVS.items():
        expected[f"{name}.conv.weight"] = shape
        expected.update({f"{name}.bn.{p}": (shape[0],) for p in ("weight", "bias", "running_mean", "running_var")})
        expected[f"{name}.bn.num_batches_tracked"] = ()
    model = FIDInceptionV3()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS
    assert sum(v.numel() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")) == STATE_VALUES
    assert all(m.eps == 0.001 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not model.train().training and not any(p.requires_grad for p in model.parameters())


def random_inception_state_test_only(seed: int = 0) -> dict[str, torch.Tensor]:
    """TEST ONLY: seeded He-scaled convs and identity BatchNorms, so activations stay finite through 94 layers."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, shape in PYTORCH_FID_CONVS.items():
        state[f"{name}.conv.weight"] = torch.randn(shape, generator=gen) * math.sqrt(2 / math.prod(shape[1:]))
        state.update({f"{name}.bn.weight": torch.ones(shape[0]), f"{name}.bn.bias": torch.zeros(shape[0]),
                      f"{name}.bn.running_mean": torch.zeros(shape[0]), f"{name}.bn.running_var": torch.ones(shape[0])})
    state.update({"fc.weight": torch.randn(1008, 2048, generator=gen) * 0.01, "fc.bias": torch.zeros(1008)})
    return state



@pytest.fixture(scope="module")
def inception_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inception") / "pt_inception-TEST-ONLY.pth"
    torch.save(random_inception_state_test_only(), path)
    return path


def test_test_only_file_loads_strictly_and_gives_pool3_features_of_the_resized_normalised_input(inception_file: Path):
    strict = FIDInceptionV3()
    strict.load_state_dict(torch.load(inception_file, weights_only=True), strict=True)
    model = load_fid_extractor(PretrainedWeights(path=f"file://{inception_file}", sha256=sha256_of(inception_file)))
    assert isinstance(model, FIDInceptionV3)
    assert torch.equal(model.Mixed_7c.branch_pool.conv.weight, strict.Mixed_7c.branch_pool.conv.weight)

    seen: list[torch.Tensor] = []
    model.Conv2d_1a_3x3.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    images = torch.rand(2, 3, 104, 80, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        features = model(images)
    assert features.shape == (2, 2048) and torch.isfinite(features).all() and (features >= 0).all() and features.std() > 0
    resized = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
    assert torch.allclose(seen[0], 2 * resized - 1, atol=1e-6), "bilinear (align_corners=False) to 299x299, then [0, 1] -> [-1, 1]"


@pytest.mark.parametrize(
    ("make", "expect_max"),
    [(lambda: FIDInceptionA(192, 32), False), (lambda: FIDInceptionC(768, 128), False), (lambda: FIDInceptionE(1280, "avg"), False),
     (lambda: FIDInceptionE(2048, "max"), True)],
    ids=["A", "C", "E_1", "E_2"],
)
def test_pool_branches_pool_like_tensorflow(make, expect_max: bool):
    """One hot corner pixel: TF's average pool leaves the padding out (1/4 at the corner, 1/9 inside); E_2 max-pools."""
    block = make()
    x = torch.zeros(1, block.branch_pool.conv.in_channels, 5, 5)
    x[..., 0, 0] = 1
    seen: list[torch.Tensor] = []
    block.branch_pool.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    with torch.inference_mode():
        block.eval()(x)
    corner, inside = seen[0][0, :, 0, 0], seen[0][0, :, 1, 1]
    if expect_max:
        assert torch.all(corner == 1) and torch.all(inside == 1) and seen[0][0, :, 2, 2].abs().sum() == 0
    else:
        assert torch.allclose(corner, torch.full_like(corner, 1 / 4)) and torch.allclose(inside, torch.full_like(inside, 1 / 9))


def test_a_file_that_does_not_fit_is_a_one_line_error_naming_the_key(tmp_path: Path, inception_file: Path):
    state = random_inception_state_test_only()
    state["fc.weights"] = state.pop("fc.weight")
    renamed = tmp_path / "renamed.pth"
    torch.save(state, renamed)
    with pytest.raises(MissingWeightsError) as info:
        load_fid_extractor(PretrainedWeights(path=str(renamed)), "evaluation.fid_inception")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"evaluation.fid_inception.path={renamed} does not fit")
    assert "missing 1 (fc.weight)" in message and "unexpected 1 (fc.weights)" in message

    imagenet_head = {**random_inception_state_test_only(), "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}
    torch.save(imagenet_head, renamed)
    with pytest.raises(MissingWeightsError, match=r"wrong shape 2 \(fc.weight, fc.bias\)$"):
        load_fid_extractor(PretrainedWeights(path=str(renamed)))
    with pytest.raises(MissingWeightsError, match="do not match evaluation.fid_inception.sha256"):
        load_fid_extractor(PretrainedWeights(path=str(inception_file), sha256="0" * 64))
    with pytest.raises(MissingWeightsError, match="not found at evaluation.fid_inception.path=/nowhere/pt_inception.pth"):
        load_fid_extractor(PretrainedWeights(path="/nowhere/pt_inception.pth"))

