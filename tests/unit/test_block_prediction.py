"""Block-wise prediction gives every voxel the prediction of one whole-image pass, whatever the blocks.

A small fixed convolution stands in for the trained network (same interface as ``TrainedModel``). Predicting in
many small blocks (halo'd by nnU-Net's global tile grid) must give the logits of predicting the image as one block,
with and without resampling, with a transposed axis order and for an image smaller than the patch (padding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window

from nnssl.inference.block_prediction import BlockPredictor
from nnssl.inference.blocks import CaseBlocks, default_block_shape, plan_axis
from nnssl.inference.tissue import TissueTest, otsu_separation
from nnssl.volumes.lazy import LazyVolume


class ArrayVolume(LazyVolume):
    def __init__(self, array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> None:
        self.array, self.path = array, "memory"
        self.shape, self.dtype, self.spacing = array.shape, array.dtype, tuple(spacing)

    def read(self, region, out=None):
        return self.array[region]


class _Labels:
    has_regions = False


class FakeModel:
    """A fixed 3x3x3 convolution (2 heads) with nnU-Net's Gaussian and tile grid."""

    def __init__(self, patch=(8, 16, 16), step=0.5) -> None:
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(1, 2, 3, padding=1)
        self.patch_size, self.step, self.device = patch, step, torch.device("cpu")
        self.num_heads, self.folds, self.label_manager = 2, ["0"], _Labels()

    def tile_starts(self, padded):
        return compute_steps_for_sliding_window(tuple(padded), self.patch_size, self.step)

    def gaussian(self):
        return compute_gaussian(self.patch_size, 1 / 8, 10, torch.float32, self.device)

    def use_fold(self, index):
        pass

    @torch.inference_mode()
    def predict_tiles(self, tiles):
        # the tile's own mean makes the prediction depend on where the tile lies (as a real network's context)
        return self.conv(tiles) + tiles.mean(dim=(1, 2, 3, 4), keepdim=True)

    def segmentation(self, logits):
        return logits.argmax(0).numpy().astype(np.uint8)


def identity(raw, out):
    out[...] = raw


def blockwise_logits(image, transpose, prep_shape, block_shape, model=None):
    """(K, *output shape in transposed order) logits assembled from the blocks' ``needed`` logits."""
    model = model or FakeModel()
    padded = [max(n, p) for n, p in zip(prep_shape, model.patch_size)]
    blocks = CaseBlocks(image.shape, transpose, prep_shape, model.patch_size, model.tile_starts(padded), block_shape)
    predictor = BlockPredictor(model, [ArrayVolume(image)], [identity], blocks, None, probabilities=False)
    t_shape = [image.shape[a] for a in transpose]
    out = np.zeros((2, *t_shape), np.float32)
    for index in range(len(blocks)):
        plan = blocks.plan(index)
        logits = predictor.predict(predictor.read(plan))
        if any(a.to_out is not None for a in plan.axes):
            from nnssl.volumes import resampling

            logits = torch.from_numpy(resampling.resample_block(logits.numpy(), [a.to_out for a in plan.axes]))
        out[(slice(None), *(slice(*a.out) for a in plan.axes))] = logits.numpy()
    return out, blocks


@pytest.mark.parametrize("shape, transpose, prep_shape, small", [
    ((24, 40, 56), [0, 1, 2], (24, 40, 56), (8, 8, 8)),  # no resampling
    ((24, 40, 56), [0, 1, 2], (37, 30, 56), (8, 16, 8)),  # up- and downsampling
    ((24, 40, 56), [2, 0, 1], (56, 24, 40), (16, 8, 8)),  # transposed axes
    ((6, 40, 10), [0, 1, 2], (6, 40, 10), (8, 8, 8)),  # smaller than the patch: nnU-Net's padding
])
def test_blocks_give_the_whole_image_prediction(shape, transpose, prep_shape, small):
    image = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    whole, whole_blocks = blockwise_logits(image, transpose, prep_shape, [64, 64, 64])
    assert len(whole_blocks) == 1
    blocked, blocks = blockwise_logits(image, transpose, prep_shape, small)
    assert len(blocks) > 8
    np.testing.assert_allclose(blocked, whole, rtol=0, atol=1e-4)


def test_tiles_predicted_in_batches_give_the_same_logits(monkeypatch):
    """On a GPU several tiles go through the network together; every tile must keep its own place and weight."""
    from nnssl.inference import block_prediction

    image = np.random.default_rng(2).normal(size=(24, 40, 56)).astype(np.float32)
    one_by_one, _ = blockwise_logits(image, [0, 1, 2], (24, 40, 56), (16, 16, 16))
    monkeypatch.setattr(block_prediction, "tiles_per_batch", lambda device, patch: 5)
    batched, _ = blockwise_logits(image, [0, 1, 2], (24, 40, 56), (16, 16, 16))
    np.testing.assert_allclose(batched, one_by_one, rtol=0, atol=1e-4)


def test_the_halo_is_the_reach_of_the_tiles():
    """Tiles of nnU-Net's grid for 100 voxels, patch 32, step 16: 0, 17, 34, 51, 68 (rounded even spacing)."""
    starts = compute_steps_for_sliding_window((100,), (32,), 0.5)[0]
    from nnssl.inference.blocks import AxisGeometry

    axis = AxisGeometry(100, 100, 32, tuple(starts))
    plan = plan_axis(axis, (40, 60))
    assert plan.tiles == tuple(s for s in starts if s < 60 and s + 32 > 40)
    assert plan.union == (min(plan.tiles), max(plan.tiles) + 32)
    assert plan.raw == plan.prep == plan.union and plan.to_prep is None


def test_default_blocks_are_whole_chunks_and_patches():
    shape = default_block_shape((1000, 3000, 3000), [0, 1, 2], [1.0, 2.0, 2.0], [64, 128, 128], 64, 256, 4)
    assert shape == (256, 1024, 1024)
    assert default_block_shape((100, 100, 100), [0, 1, 2], [1, 1, 1], [16, 32, 32], 64, 256, 4) == (128, 128, 128)


def test_tissue_test_skips_only_clear_background():
    rng = np.random.default_rng(0)
    background = rng.normal(100, 3, 500)
    tissue = rng.gamma(2.0, 300.0, 500) + 600
    test = TissueTest(np.concatenate([background, tissue]))
    assert test.threshold is not None and 110 < test.threshold < 600
    dark = rng.normal(100, 3, (1, 32, 32, 32)).astype(np.float32)
    assert not test.has_tissue(dark)
    dark[0, :16, :16, :16] += 1000
    assert test.has_tissue(dark)
    assert TissueTest(rng.gamma(2.0, 300.0, 1000)).threshold is None  # all tissue: nothing to skip
    assert otsu_separation(np.array([0.0, 0.0, 1.0, 1.0]), 0.5) == pytest.approx(1.0)
