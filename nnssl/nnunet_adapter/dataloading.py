"""Patches of preprocessed unlabeled cases through nnU-Net's own loader and augmentation.

Uses ``nnUNetDataLoader`` and ``nnUNetTrainer.get_training_transforms`` without any copy of them, keeping
its spatial transforms and mirroring and leaving out its intensity transforms (``pretraining_transforms``);
the "seg" that nnU-Net stores travels along and is ignored by the SSL losses.
Content-aware sampling reuses nnU-Net's foreground oversampling: each case's tissue locations are its
``class_locations``, and each patch is centred on one of them with probability ``1 - random_fraction``
(nnU-Net's probabilistic oversampling), else drawn uniformly. Cases are opened without memory mapping,
so a worker holds the chunks of its patches, never a growing share of a large file.
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnssl.volumes.tissue_sampling import TISSUE_LABELS
from nnssl.worker_processes import die_with_parent


def default_num_workers() -> int:
    """nnU-Net's choice (``nnUNet_n_proc_DA`` if set), capped by the machine's cores."""
    import os

    return max(0, min(get_allowed_n_proc_DA(), (os.cpu_count() or 1) - 1))


def augmentation_parameters(patch_size: Sequence[int]) -> tuple:
    """(rotation, dummy 2D augmentation, initial patch size, mirror axes) exactly as nnU-Net derives them."""
    # nnU-Net computes these in an instance method that only reads the patch size and logs
    fake_trainer = types.SimpleNamespace(
        configuration_manager=types.SimpleNamespace(patch_size=list(patch_size)),
        print_to_log_file=lambda *args, **kwargs: None,
    )
    return nnUNetTrainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size(fake_trainer)


class PatchReadingDataset(nnUNetDatasetBlosc2):
    """nnU-Net's blosc2 dataset opened with plain reads instead of memory maps."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.mmap_kwargs = {}


class WorkerSafeDataLoader(nnUNetDataLoader):
    """nnU-Net's data loader whose copies in batchgenerators' worker processes end with the main process.

    batchgenerators calls ``set_thread_id`` first thing in each worker (its ``producer``): the one hook into
    a worker's start that needs no copy of batchgenerators' code.
    """

    def set_thread_id(self, thread_id: int) -> None:
        die_with_parent()
        super().set_thread_id(thread_id)


def patch_loader(folder: str, identifiers: list[str], batch_size: int, patch_size, final_patch_size,
                 plans: dict, transforms, random_fraction: float) -> nnUNetDataLoader:
    """nnU-Net's data loader over stored cases; ``random_fraction`` of the patches anywhere, the rest centred
    on tissue (``TISSUE_LABELS``)."""
    # the labels of what nnssl stores (tissue locations), never the dataset's: with the dataset's ``ignore``
    # label nnU-Net's loader would look for locations of annotated voxels, which unlabeled cases do not have
    label_manager = PlansManager(plans).get_label_manager({"labels": TISSUE_LABELS})
    dataset = PatchReadingDataset(folder, identifiers)
    return WorkerSafeDataLoader(dataset, batch_size, patch_size, final_patch_size, label_manager,
                            oversample_foreground_percent=1.0 - random_fraction, transforms=transforms,
                            probabilistic_oversampling=True)


# nnU-Net's transforms that change how voxels look rather than where they are
INTENSITY_TRANSFORMS = (GaussianNoiseTransform, GaussianBlurTransform, MultiplicativeBrightnessTransform,
                        ContrastTransform, SimulateLowResolutionTransform, GammaTransform)


def pretraining_transforms(patch_size: Sequence[int]) -> ComposeTransforms:
    """nnU-Net's training transforms for ``patch_size`` without its intensity transforms.

    A restoration method's target is the augmented patch itself: with noise, blur, low resolution or
    gamma applied, the network would be asked to reproduce the artefacts (MIC-DKFZ's nnssl and the
    MAE papers augment spatially only). The two-view methods add their own per-view intensity
    augmentation (``nnssl.pretraining.methods.views``).
    """
    rotation, dummy_2d, _, mirror_axes = augmentation_parameters(patch_size)
    stock = nnUNetTrainer.get_training_transforms(list(patch_size), rotation, None, mirror_axes, dummy_2d,
                                                  use_mask_for_norm=None)
    return ComposeTransforms([t for t in stock.transforms if not _changes_intensity(t)])


def _changes_intensity(transform: BasicTransform) -> bool:
    inner = transform.transform if isinstance(transform, RandomTransform) else transform
    return isinstance(inner, INTENSITY_TRANSFORMS)


def training_batches(
    folder: str, identifiers: list[str], batch_size: int, patch_size: Sequence[int], plans: dict,
    num_workers: int, pin_memory: bool = False, random_fraction: float = 0.05,
) -> Iterator[dict]:
    """Endless spatially augmented batches (``pretraining_transforms``); ``batch['data']`` is (B, C, Z, Y, X)
    float32."""
    initial_patch_size = augmentation_parameters(patch_size)[2]
    transforms = pretraining_transforms(patch_size)
    loader = patch_loader(folder, identifiers, batch_size, initial_patch_size, list(patch_size), plans, transforms,
                     random_fraction)
    if num_workers == 0:
        return SingleThreadedAugmenter(loader, None)
    return NonDetMultiThreadedAugmenter(loader, None, num_workers, num_cached=max(6, num_workers // 2),
                                        seeds=None, pin_memory=pin_memory, wait_time=0.002)


def fixed_validation_batches(
    folder: str, identifiers: list[str], batch_size: int, patch_size: Sequence[int], plans: dict,
    num_batches: int, seed: int, random_fraction: float = 0.05,
) -> list[torch.Tensor]:
    """``num_batches`` un-augmented batches, drawn once with a fixed seed: a stable validation loss."""
    transforms = nnUNetTrainer.get_validation_transforms(None)
    loader = patch_loader(folder, identifiers, batch_size, list(patch_size), list(patch_size), plans, transforms,
                     random_fraction)
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        return [loader.generate_train_batch()["data"].float().clone() for _ in range(num_batches)]
    finally:
        np.random.set_state(state)


def shutdown(batches: Iterator[dict]) -> None:
    if isinstance(batches, NonDetMultiThreadedAugmenter):
        batches._finish()
