"""A trained nnU-Net model as block-wise prediction needs it: nnU-Net's own predictor, asked for one tile at a time.

Everything that decides the prediction is nnU-Net's: the model folder lookup (``get_output_folder``), the network
and its fold parameters (``nnUNetPredictor.initialize_from_trained_model_folder``), the sliding-window grid
(``compute_steps_for_sliding_window``), the Gaussian weights (``compute_gaussian``), mirroring
(``_internal_maybe_mirror_and_predict``) and the logits-to-labels rule (``LabelManager``). Formats nnU-Net reads
itself (NIfTI, MHA, NRRD) are handed to ``nnUNetPredictor.predict_from_files`` unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window
from nnunetv2.utilities.file_path_utilities import get_output_folder

from nnssl.errors import NnsslError
from nnssl.nnunet_adapter.case_store import resampled_shape
from nnssl.nnunet_adapter.model_request import ModelRequest
from nnssl.nnunet_folders import RESULTS_ENV, nnunet_folder

logger = logging.getLogger(__name__)

# nnU-Net's Gaussian: sigma 1/8 of the patch, peak 10 (its half-precision accumulator needs the scale)
GAUSSIAN_SIGMA_SCALE = 1.0 / 8
GAUSSIAN_PEAK = 10


def model_folder(request: ModelRequest) -> str:
    """nnU-Net's results folder of the model, checked to exist (one-line errors naming the fix)."""
    nnunet_folder(RESULTS_ENV, " (the folder nnUNetv2_train wrote the model into)")
    try:
        folder = get_output_folder(request.dataset, request.trainer, request.plans, request.configuration)
    except (RuntimeError, ValueError) as e:
        raise NnsslError(f"-d {request.dataset}: {str(e).splitlines()[0]}; check -d and nnUNet_results") from e
    if not os.path.isdir(folder):
        raise NnsslError(f"{folder}: no trained model there; check -d, -tr, -p and -c (the folder "
                         f"nnUNetv2_train -tr {request.trainer} -p {request.plans} wrote)")
    return folder


def model_folds(folder: str, request: ModelRequest) -> list[str]:
    """The folds to ensemble, each checked to hold the checkpoint."""
    if request.folds is None:
        folds = sorted(n[len("fold_"):] for n in os.listdir(folder)
                       if n.startswith("fold_") and os.path.isfile(os.path.join(folder, n, request.checkpoint)))
        if not folds:
            raise NnsslError(f"{folder}: no fold_*/{request.checkpoint}; train a fold or pick -chk")
        return folds
    for fold in request.folds:
        checkpoint = os.path.join(folder, f"fold_{fold}", request.checkpoint)
        if not os.path.isfile(checkpoint):
            raise NnsslError(f"{checkpoint}: no such checkpoint; pick a trained fold with -f or another -chk")
    return list(request.folds)


def torch_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NnsslError("-device cuda: no CUDA device available; use -device cpu (slow) or a GPU machine")
    if name.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise NnsslError(f"-device {name}: use cpu, cuda or mps")
    return torch.device(name)


class TrainedModel:
    """A loaded model: geometry and preprocessing settings of its plans, and tile prediction.

    Axes of everything here are the plans' (transposed) axis order, as nnU-Net's preprocessed data.
    """

    def __init__(self, request: ModelRequest, device: str, step_size: float, mirroring: bool) -> None:
        folder = model_folder(request)
        self.folds = model_folds(folder, request)
        self.device = torch_device(device)
        if not 0 < step_size <= 1:
            raise NnsslError(f"-step_size {step_size}: must be in (0, 1]; nnU-Net's default is 0.5")
        predictor = nnUNetPredictor(tile_step_size=step_size, use_gaussian=True, use_mirroring=mirroring,
                                    perform_everything_on_device=self.device.type == "cuda", device=self.device,
                                    verbose=False, allow_tqdm=False)
        with contextlib.redirect_stdout(None):  # nnU-Net prints its set-up
            predictor.initialize_from_trained_model_folder(folder, [_fold(f) for f in self.folds], request.checkpoint)
        if predictor.configuration_manager.previous_stage_name is not None:
            raise NnsslError(f"-c {request.configuration}: cascade stages need the previous stage's predictions; "
                             f"nnssl_predict runs single-stage configurations (3d_fullres, 3d_lowres)")
        self.folder, self.predictor = folder, predictor
        self.network = predictor.network.to(self.device).eval()
        self.patch_size = tuple(int(p) for p in predictor.configuration_manager.patch_size)
        if len(self.patch_size) != 3:
            raise NnsslError(f"-c {request.configuration}: a 2D configuration; nnssl_predict runs 3D models")
        self.label_manager = predictor.label_manager
        self.num_heads = int(self.label_manager.num_segmentation_heads)
        self._gaussian: torch.Tensor | None = None

    # --- the plans -------------------------------------------------------------------------------------------
    @property
    def num_input_channels(self) -> int:
        return len(self.predictor.dataset_json.get("channel_names", self.predictor.dataset_json.get("modality", {})))

    @property
    def transpose_forward(self) -> list[int]:
        return list(self.predictor.plans_manager.transpose_forward)

    @property
    def spacing(self) -> list[float]:
        """Target spacing, transposed axis order."""
        return [float(s) for s in self.predictor.configuration_manager.spacing]

    @property
    def file_ending(self) -> str:
        return self.predictor.dataset_json["file_ending"]

    def normalization(self) -> tuple[list[str], list[bool], dict]:
        """(schemes, use_mask_for_norm, intensity properties per channel) of the plans."""
        configuration = self.predictor.configuration_manager
        properties = self.predictor.plans_manager.foreground_intensity_properties_per_channel
        return list(configuration.normalization_schemes), list(configuration.use_mask_for_norm), properties

    def preprocessed_shape(self, shape: Sequence[int], spacing: Sequence[float]) -> tuple[int, int, int]:
        """Shape after resampling to the plans' spacing (both transposed), rounded as nnU-Net does."""
        return resampled_shape(shape, spacing, self.spacing)

    def label_values(self) -> list[int]:
        return [int(v) for v in self.label_manager.all_labels]

    # --- the sliding window ----------------------------------------------------------------------------------
    def tile_starts(self, padded_shape: Sequence[int]) -> list[list[int]]:
        """Per axis, nnU-Net's tile start positions for a (padded) preprocessed image of ``padded_shape``."""
        return compute_steps_for_sliding_window(tuple(padded_shape), self.patch_size, self.predictor.tile_step_size)

    def gaussian(self) -> torch.Tensor:
        """(pz, py, px) float32 tile weights on the device, nnU-Net's (zeros replaced by the smallest weight)."""
        if self._gaussian is None:
            weights = compute_gaussian(self.patch_size, GAUSSIAN_SIGMA_SCALE, GAUSSIAN_PEAK, torch.float32,
                                       self.device)
            self._gaussian = weights.clone()
        return self._gaussian

    def use_fold(self, index: int) -> None:
        """Loads the parameters of the ``index``-th fold into the network."""
        if len(self.folds) > 1:
            self.network.load_state_dict(self.predictor.list_of_parameters[index])

    @torch.inference_mode()
    def predict_tiles(self, tiles: torch.Tensor) -> torch.Tensor:
        """(N, C, pz, py, px) float32 on the device -> (N, K, pz, py, px) float32 logits, mirrored unless disabled."""
        autocast = torch.autocast("cuda") if self.device.type == "cuda" else contextlib.nullcontext()
        with autocast:
            return self.predictor._internal_maybe_mirror_and_predict(tiles).float()

    def segmentation(self, logits: torch.Tensor) -> np.ndarray:
        """(K, z, y, x) logits -> (z, y, x) labels (uint8, or uint16 for label values above 255)."""
        labels = self.label_manager.convert_logits_to_segmentation(logits)
        labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        return labels.astype(self.label_dtype(), copy=False)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(K, z, y, x) logits -> (K, z, y, x) probabilities (softmax or sigmoid for region models)."""
        return self.label_manager.apply_inference_nonlin(logits)

    def label_dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if max(self.label_values()) < 256 else np.uint16)

    # --- formats nnU-Net reads itself --------------------------------------------------------------------------
    def predict_files(self, cases: list[list[str]], outputs: list[str], save_probabilities: bool,
                      overwrite: bool) -> None:
        """nnU-Net's own prediction of whole NIfTI / MHA / NRRD cases (``outputs``: paths without file ending)."""
        processes = max(1, min(3, os.cpu_count() or 1))
        self.predictor.predict_from_files(cases, outputs, save_probabilities=save_probabilities, overwrite=overwrite,
                                          num_processes_preprocessing=processes,
                                          num_processes_segmentation_export=processes)


def _fold(fold: str) -> int | str:
    return fold if fold == "all" else int(fold)
