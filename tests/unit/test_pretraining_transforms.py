"""Pretraining batches are augmented spatially only: restoration targets carry no intensity artefacts."""

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform

from nnssl.nnunet_adapter.dataloading import INTENSITY_TRANSFORMS, pretraining_transforms


@pytest.mark.parametrize("patch", [(32, 64, 64), (1, 64, 64)])  # 3D, and nnU-Net's dummy-2D augmentation
def test_spatial_transforms_and_mirroring_stay_intensity_transforms_go(patch):
    transforms = pretraining_transforms(patch).transforms
    kinds = [type(t.transform if isinstance(t, RandomTransform) else t) for t in transforms]
    assert SpatialTransform in kinds and MirrorTransform in kinds
    assert not [k for k in kinds if issubclass(k, INTENSITY_TRANSFORMS)]


def test_a_patch_keeps_its_intensities():
    """Without spatial changes drawn (the default probabilities leave most patches untouched), every
    voxel value of the output is one of the input's: no noise, blur, gamma or contrast change."""
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 50, size=(1, 16, 32, 32)).astype(np.float32))
    transforms = pretraining_transforms((16, 32, 32))
    torch.manual_seed(0)
    for _ in range(10):
        out = transforms(image=image.clone(), segmentation=torch.zeros(1, 16, 32, 32, dtype=torch.int16))["image"]
        if out.shape == image.shape and torch.equal(torch.sort(out.flatten()).values,
                                                   torch.sort(image.flatten()).values):
            return  # a patch only mirrored or left as it was: its intensities are the input's
    pytest.fail("no patch kept its intensities in 10 draws")
