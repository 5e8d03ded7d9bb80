import pytest
import torch

from nnssl.pretraining.methods.base import SSLModel
from nnssl.pretraining.methods.genesis_corruptions import bezier_intensity_map, in_paint, local_shuffle, out_paint
from nnssl.pretraining.methods.registry import create_method
from tests.tiny_networks import PATCH, tiny_unet


def unit_patch(seed=0):
    return torch.rand(1, *PATCH, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", range(6))
def test_bezier_map_is_monotonic_from_unit_interval_to_itself(seed):
    ramp = torch.linspace(0, 1, 101).view(1, 1, 1, 101)
    mapped = bezier_intensity_map(ramp, torch.Generator().manual_seed(seed)).flatten()
    steps = mapped.diff()
    assert (steps >= -1e-6).all() or (steps <= 1e-6).all()
    assert {round(float(mapped[0]), 4), round(float(mapped[-1]), 4)} == {0.0, 1.0}


def test_local_shuffle_of_one_box_permutes_only_inside_it():
    image = unit_patch()
    out = local_shuffle(image, 1, torch.Generator().manual_seed(1))
    changed = (out != image)
    assert torch.equal(out.flatten().sort().values, image.flatten().sort().values)
    if changed.any():
        idx = changed.nonzero()[:, 1:]
        extent = idx.max(0).values - idx.min(0).values + 1
        assert (extent <= torch.tensor([max(1, d // 10) for d in PATCH])).all()


@pytest.mark.parametrize("corruption", [
    lambda image, generator: local_shuffle(image, 200, generator), in_paint, out_paint])
def test_corruptions_are_reproducible_from_the_seed_and_differ_between_seeds(corruption):
    # bulk noise is drawn from a device generator seeded from the CPU one: the seed must still decide it
    image = unit_patch()
    first = corruption(image, torch.Generator().manual_seed(3))
    again = corruption(image, torch.Generator().manual_seed(3))
    other = corruption(image, torch.Generator().manual_seed(4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_in_painting_changes_at_most_five_boxes_with_unit_noise():
    image = torch.full((1, *PATCH), 5.0)  # outside [0, 1], so painted voxels are recognisable
    out = in_paint(image, torch.Generator().manual_seed(2))
    painted = out != 5.0
    assert painted.any() and (out[painted] >= 0).all() and (out[painted] <= 1).all()
    assert painted.float().mean() <= 5 * (1 / 3) ** 3 + 1e-6


def test_out_painting_keeps_a_central_box():
    image = torch.full((1, *PATCH), 5.0)
    out = out_paint(image, torch.Generator().manual_seed(3))
    kept = out == 5.0
    assert kept.any() and (out[~kept] <= 1).all() and kept.float().mean() < 1


@pytest.mark.parametrize("normalization", ["none", "patch"])
def test_restoration_loss_is_mse_over_all_voxels(normalization):
    """MSE over every voxel; with ``"patch"`` in units of each patch's own standard deviation."""
    method = create_method("modelsgenesis", PATCH, 1, {"target_normalization": normalization})
    network = tiny_unet()
    model = SSLModel(network, method.build_heads(network), method)
    images = torch.randn(2, 1, *PATCH) * torch.tensor([1.0, 8.0]).view(2, 1, 1, 1, 1)
    out = model(images, torch.Generator().manual_seed(0))
    spread = images.std(dim=(2, 3, 4), unbiased=False, keepdim=True) if normalization == "patch" else 1.0
    expected = (((out.preview["restored"] - images) / spread) ** 2).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)
    corrupted = out.preview["corrupted"]
    assert corrupted.amin() >= images.amin() - 1e-5 and corrupted.amax() <= images.amax() + 1e-5
