"""One block from raw voxels to labels, in three stages that overlap across blocks (read, predict, finish).

``read``: the block's raw input (halo included), the tissue test, nnU-Net's normalization with the case's sampled
statistics, linear resampling to the plans' spacing and nnU-Net's zero padding -> (C, *union) float32.
``predict``: every tile of nnU-Net's global grid that overlaps the block, Gaussian-weighted and summed over the
block's needed voxels, averaged over the folds -> (K, *needed) logits.
``finish``: resampling of the logits to the output voxels, nnU-Net's logits-to-labels rule, and the original
axis order -> labels (z, y, x) and, when asked, float16 probabilities (K, z, y, x).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from nnssl.inference.blocks import BlockPlan, CaseBlocks
from nnssl.inference.tissue import TissueTest
from nnssl.nnunet_adapter.block_normalization import BlockNormalizer
from nnssl.nnunet_adapter.prediction import TrainedModel
from nnssl.volumes import resampling
from nnssl.volumes.lazy import LazyVolume, read_region

# Tiles of one network call on a GPU, as voxels: small patches are launch-bound one at a time (measured on an
# H200: 16x32x32 tiles one by one kept the GPU mostly idle); large patches stay at one tile, as nnU-Net runs them.
GPU_BATCH_VOXELS = 2**21


def tiles_per_batch(device: torch.device, patch: Sequence[int]) -> int:
    """Tiles predicted together: one on the CPU (nnU-Net's way; no faster there), more for small GPU patches."""
    if device.type != "cuda":
        return 1
    return max(1, GPU_BATCH_VOXELS // int(np.prod(patch)))


@dataclass
class ReadBlock:
    """A block after ``read``: its preprocessed, padded input, or None when it holds no tissue."""

    plan: BlockPlan
    data: np.ndarray | None  # (C, *union) float32, transposed axis order


@dataclass
class FinishedBlock:
    plan: BlockPlan
    region: tuple[tuple[int, int], ...]  # output voxels, original axis order
    labels: np.ndarray | None  # (z, y, x), original axis order; None: skipped (background)
    probabilities: np.ndarray | None  # (K, z, y, x) float16


class BlockPredictor:
    """The three stages for the blocks of one case."""

    def __init__(self, model: TrainedModel, volumes: Sequence[LazyVolume], normalizers: Sequence[BlockNormalizer],
                 blocks: CaseBlocks, tissue: TissueTest | None, probabilities: bool) -> None:
        self.model, self.volumes, self.normalizers = model, list(volumes), list(normalizers)
        self.blocks, self.tissue, self.want_probabilities = blocks, tissue, probabilities
        self.inverse = list(np.argsort(blocks.transpose))  # transposed -> original axis order

    def read(self, plan: BlockPlan) -> ReadBlock:
        ranges = [a.raw for a in plan.axes]
        raw = np.stack([read_region(v, self.blocks.transpose, ranges) for v in self.volumes])
        if self.tissue is not None and not self.tissue.has_tissue(raw):
            return ReadBlock(plan, None)
        normalized = np.empty(raw.shape, np.float32)
        for channel, normalize in enumerate(self.normalizers):
            normalize(raw[channel], normalized[channel])
        del raw
        prep = resampling.resample_block(normalized, [a.to_prep for a in plan.axes])
        union = [a.union[1] - a.union[0] for a in plan.axes]
        if list(prep.shape[1:]) == union:
            return ReadBlock(plan, prep)
        padded = np.zeros((len(self.volumes), *union), np.float32)  # nnU-Net's zero padding of small images
        inside = tuple(slice(a.prep[0] + g.offset - a.union[0], a.prep[1] + g.offset - a.union[0])
                       for a, g in zip(plan.axes, self.blocks.axes))
        padded[(slice(None), *inside)] = prep
        return ReadBlock(plan, padded)

    @torch.inference_mode()
    def predict(self, block: ReadBlock) -> torch.Tensor:
        """(K, *needed) float32 logits on the device."""
        model, plan = self.model, block.plan
        patch = model.patch_size
        data = torch.from_numpy(block.data).to(model.device)
        needed = [a.needed[1] - a.needed[0] for a in plan.axes]
        logits = torch.zeros((model.num_heads, *needed), dtype=torch.float32, device=model.device)
        weights = torch.zeros(needed, dtype=torch.float32, device=model.device)
        gaussian = model.gaussian()
        starts = plan.tile_starts()
        cuts = [self._cuts(start, plan) for start in starts]
        batch = tiles_per_batch(model.device, patch)
        for fold in range(len(model.folds)):
            model.use_fold(fold)
            for first in range(0, len(starts), batch):
                tiles = torch.stack([data[(slice(None), *(slice(s - a.union[0], s - a.union[0] + p)
                                                           for s, a, p in zip(start, plan.axes, patch)))]
                                     for start in starts[first:first + batch]])
                predictions = model.predict_tiles(tiles)
                predictions *= gaussian
                for prediction, (tile_part, block_part) in zip(predictions, cuts[first:first + batch]):
                    logits[(slice(None), *block_part)] += prediction[(slice(None), *tile_part)]
                    if fold == 0:
                        weights[block_part] += gaussian[tile_part]
        weights *= len(model.folds)
        return logits.div_(weights)

    def _cuts(self, start: tuple[int, int, int], plan: BlockPlan) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """(part of the tile, part of the needed voxels) where a tile starting at ``start`` overlaps them."""
        tile_part, block_part = [], []
        for s, a, g in zip(start, plan.axes, self.blocks.axes):
            low, high = a.needed[0] + g.offset, a.needed[1] + g.offset
            lo, hi = max(s, low), min(s + g.patch, high)
            tile_part.append(slice(lo - s, hi - s))
            block_part.append(slice(lo - low, hi - low))
        return tuple(tile_part), tuple(block_part)

    def finish(self, plan: BlockPlan, logits: torch.Tensor | None) -> FinishedBlock:
        region = self.blocks.out_region(plan.index)
        if logits is None:
            return FinishedBlock(plan, region, None, self._background_probabilities(region))
        logits = logits.cpu()  # nnU-Net's label rule works on host memory (as its export)
        if any(a.to_out is not None for a in plan.axes):
            logits = torch.from_numpy(resampling.resample_block(logits.numpy(), [a.to_out for a in plan.axes]))
        labels = np.transpose(self.model.segmentation(logits), self.inverse)
        probabilities = None
        if self.want_probabilities:
            values = self.model.probabilities(logits).to(torch.float16).cpu().numpy()
            probabilities = np.transpose(values, [0, *(i + 1 for i in self.inverse)])
        return FinishedBlock(plan, region, np.ascontiguousarray(labels), probabilities)

    def _background_probabilities(self, region) -> np.ndarray | None:
        """What a skipped block's probabilities are: certain background."""
        if not self.want_probabilities:
            return None
        values = np.zeros((self.model.num_heads, *(e - a for a, e in region)), np.float16)
        if not self.model.label_manager.has_regions:
            values[0] = 1
        return values
