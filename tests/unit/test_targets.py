"""Reconstruction targets and the trivial answer, against hand-written references."""

import pytest
import torch

from nnssl.pretraining.methods.base import SSLModel
from nnssl.pretraining.methods.registry import create_method
from nnssl.pretraining.methods.targets import target_frame, to_images, to_target, visible_mean
from tests.tiny_networks import PATCH, tiny_unet


def reference_frame(images, mask):
    """Loops: per sample and channel, (mean of the visible voxels, population std of the whole patch)."""
    b, c = images.shape[:2]
    shift, scale = torch.zeros(b, c, 1, 1, 1), torch.zeros(b, c, 1, 1, 1)
    for i in range(b):
        visible = mask[i, 0] == 0
        for ch in range(c):
            values = images[i, ch]
            shift[i, ch] = values[visible].double().mean()
            scale[i, ch] = (values.double() - values.double().mean()).pow(2).mean().sqrt()
    return shift, scale


def test_visible_mean_of_a_half_hidden_patch():
    images = torch.zeros(1, 1, 2, 2, 2)
    images[0, 0, 0] = 4.0
    mask = torch.zeros(1, 1, 2, 2, 2)
    mask[0, 0, 1] = 1  # hide the zeros: the visible voxels are the fours
    assert visible_mean(images, mask).item() == 4.0


def test_patch_frame_matches_reference_and_inverts():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 2, 3, 4, 5, generator=g) * 7 + 3
    mask = (torch.rand(2, 1, 3, 4, 5, generator=g) > 0.5).float()
    shift, scale = target_frame(images, mask, "patch")
    expected_shift, expected_scale = reference_frame(images, mask)
    assert torch.allclose(shift, expected_shift, atol=1e-5) and torch.allclose(scale, expected_scale, atol=1e-5)
    target = to_target(images, (shift, scale))
    assert torch.allclose(visible_mean(target, mask), torch.zeros(2, 2, 1, 1, 1), atol=1e-5)  # trivial = 0
    assert torch.allclose(to_images(target, (shift, scale)), images, atol=1e-4)


def test_patch_targets_do_not_depend_on_intensity_scale():
    """A patch 100 x brighter (a bright cell in a dark light-sheet volume) gets the same target."""
    g = torch.Generator().manual_seed(1)
    images = torch.rand(1, 1, 4, 8, 8, generator=g)
    mask = (torch.rand(1, 1, 4, 8, 8, generator=g) > 0.5).float()
    dim = to_target(images, target_frame(images, mask, "patch"))
    bright = to_target(100 * images + 20, target_frame(100 * images + 20, mask, "patch"))
    assert torch.allclose(dim, bright, atol=1e-4)


def test_none_frame_is_the_identity():
    images = torch.randn(2, 1, 2, 3, 4)
    frame = target_frame(images, torch.zeros(2, 1, 2, 3, 4), "none")
    assert torch.equal(to_target(images, frame), images)


@pytest.mark.parametrize("name", ["mae", "sparkmae"])
@pytest.mark.parametrize("normalization", ["none", "patch"])
def test_trivial_answer_is_the_visible_mean_in_target_units(name, normalization):
    """Validation reports the loss of predicting every hidden voxel as its patch's visible mean."""
    method = create_method(name, PATCH, 1, {"target_normalization": normalization})
    network = tiny_unet()
    model = SSLModel(network, method.build_heads(network), method).eval()
    images = torch.randn(2, 1, *PATCH) * torch.tensor([1.0, 30.0]).view(2, 1, 1, 1, 1) + 5
    with torch.no_grad():
        out = model(images, torch.Generator().manual_seed(0))
    mask = (out.preview["masked"] == 0).all(dim=1, keepdim=True).float()
    scale = reference_frame(images, mask)[1] if normalization == "patch" else 1.0
    hidden = mask.expand_as(images).bool()
    prediction = visible_mean(images, mask).expand_as(images)
    expected = (((prediction - images) / scale) ** 2)[hidden].mean()
    assert out.figures["trivial"].item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)
    if normalization == "patch":  # per-sample units: the 30x brighter sample does not dominate
        assert out.figures["trivial"].item() < 5
    model.train()
    assert model(images, torch.Generator().manual_seed(0)).figures == {}  # training steps skip it


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_models_genesis_trivial_answer_copies_the_input_or_predicts_the_mean(seed):
    """The better of handing the corrupted input back and predicting each patch's mean."""
    method = create_method("modelsgenesis", PATCH, 1, {"target_normalization": "none"})
    network = tiny_unet()
    model = SSLModel(network, method.build_heads(network), method).eval()
    images = torch.randn(2, 1, *PATCH)
    with torch.no_grad():
        out = model(images, torch.Generator().manual_seed(seed))
    copy = ((out.preview["corrupted"] - images) ** 2).mean()
    mean = ((images - images.mean(dim=(2, 3, 4), keepdim=True)) ** 2).mean()
    assert out.figures["trivial"].item() == pytest.approx(min(copy, mean).item(), rel=1e-4, abs=1e-6)
