import pytest
import torch

from nnssl.pretraining.methods.masking import block_size_for_patch, random_block_mask


@pytest.mark.parametrize(
    ("patch", "expected"),
    [((160, 160, 160), (16, 16, 16)), ((32, 64, 64), (4, 8, 8)), ((16, 32, 32), (2, 4, 4)),
     ((64, 128, 128), (8, 16, 16)), ((2, 8, 8), (1, 1, 1))],
)
def test_block_size_shrinks_to_eight_blocks_per_axis(patch, expected):
    """16 voxels where a patch holds 8 of them per axis (the published 160³ setting is kept), smaller
    blocks in smaller patches."""
    assert block_size_for_patch(patch) == expected
    assert block_size_for_patch(patch, 16, 4) == tuple(max(1, min(16, p // 4)) for p in patch)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75, 0.9])
def test_exact_ratio_per_sample_when_blocks_divide_the_patch(ratio):
    mask = random_block_mask(3, (16, 32, 32), (4, 8, 8), ratio, torch.Generator().manual_seed(0))
    assert mask.shape == (3, 1, 16, 32, 32)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    n_blocks = 4 * 4 * 4
    for sample in mask:
        assert sample.mean().item() == pytest.approx(round(ratio * n_blocks) / n_blocks)


def test_mask_is_made_of_whole_blocks():
    mask = random_block_mask(1, (16, 32, 32), (4, 8, 8), 0.5, torch.Generator().manual_seed(1))[0, 0]
    blocks = mask.reshape(4, 4, 4, 8, 4, 8).permute(0, 2, 4, 1, 3, 5).reshape(64, -1)
    assert torch.all(blocks.min(1).values == blocks.max(1).values)


def test_determinism_and_variation():
    a = random_block_mask(2, (16, 32, 32), (4, 8, 8), 0.75, torch.Generator().manual_seed(5))
    b = random_block_mask(2, (16, 32, 32), (4, 8, 8), 0.75, torch.Generator().manual_seed(5))
    c = random_block_mask(2, (16, 32, 32), (4, 8, 8), 0.75, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])


def test_non_dividing_block_is_cropped_to_the_patch():
    mask = random_block_mask(4, (10, 20, 20), (4, 8, 8), 0.75, torch.Generator().manual_seed(0))
    assert mask.shape == (4, 1, 10, 20, 20)
    assert 0.5 < mask.mean().item() < 0.95


def test_invalid_ratio():
    with pytest.raises(ValueError):
        random_block_mask(1, (8, 8, 8), (2, 2, 2), 1.0)


@pytest.mark.parametrize("method", ["mae", "sparkmae"])
def test_masked_methods_take_coarser_blocks_through_min_blocks_per_axis(method):
    """The default keeps at least 8 blocks per patch axis; ``min_blocks_per_axis=4`` gives blocks of a quarter
    of each axis (the coarser, bottleneck-like masks of the reference), recorded in the settings."""
    from nnssl.pretraining.methods.registry import create_method

    default = create_method(method, (16, 32, 32), 1, {})
    coarse = create_method(method, (16, 32, 32), 1, {"min_blocks_per_axis": 4})
    assert default.settings()["block_size_per_axis"] == [2, 4, 4]
    assert coarse.settings()["block_size_per_axis"] == [4, 8, 8]
    assert coarse.settings()["min_blocks_per_axis"] == 4
    mask = coarse.mask(torch.ones(2, 1, 16, 32, 32), torch.Generator().manual_seed(0))[1]
    assert mask.shape == (2, 1, 16, 32, 32) and int(mask[0].sum()) % (4 * 8 * 8) == 0  # whole 4x8x8 blocks
