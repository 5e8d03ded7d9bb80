"""Plans for a downstream dataset that reuse a pretraining's network, spacing, axis order and normalization.

``plan_like_pretrained`` runs nnU-Net's own ``ExperimentPlanner`` for the dataset in-process (for the
automatic choices: patch size, batch size, resampling, label handling, reader) and replaces what the
pretrained weights depend on with the facts in the checkpoint's ``nnssl_metadata`` (docs/contracts.md) or,
for a checkpoint from elsewhere, its ``nnssl_adaptation_plan`` (docs/checkpoints.md).
The result is one ``3d_fullres`` configuration in ``<plans_name>.json`` that ``nnUNetv2_preprocess`` and
``nnUNetv2_train -tr nnSSLTrainer`` take as they are.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.utilities.json_export import recursive_fix_for_json_export
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnssl.atomic_files import write_json_atomic
from nnssl.checkpoints.adaptation_plan import (
    facts_from_adaptation_plan,
    prefix_renames,
    read_adaptation_plan,
    rename_key,
)
from nnssl.checkpoints.files import load_checkpoint
from nnssl.checkpoints.lookup import PLANS_KEY, PretrainedCheckpoint, resolve_pretrained
from nnssl.errors import NnsslError
from nnssl.nnunet_adapter.plans_and_networks import (
    build_network,
    dataset_name_from_id,
    num_input_channels,
    preprocessed_root,
)
from nnssl.nnunet_folders import RAW_ENV, RESULTS_ENV, check_name_part, nnunet_folder, optional_nnunet_folder

logger = logging.getLogger(__name__)

PLANS_BASENAME = "nnsslPlans"
CONFIGURATION = "3d_fullres"
# a plans-name suffix: a file name part without "__" (checked separately) and without a trailing "_"
# nnU-Net's minimum batch size, and the one its fine-tuning from SSL checkpoints plans with
RECOMMENDED_PATCH_BATCH_SIZE = 2
# nnU-Net's environment variables (named once; their spelling is nnU-Net's)
ENV_N_PROC_DA = "nnUNet_n_proc_DA"


@dataclass
class PlanLikeResult:
    """What ``plan_like_pretrained`` wrote (for the CLI summary and for callers)."""

    plans_file: str
    plans_name: str
    configuration: str
    patch_size: list[int]
    batch_size: int
    spacing: list[float]
    checkpoint: str
    plans: dict


@dataclass
class PretrainingFacts:
    """The facts of a pretraining that fine-tuning plans must keep (``nnssl_metadata`` or adaptation plan).

    ``spacing`` None: the pretraining did not resample (the dataset keeps its own); ``recommended_patch_size``:
    the adaptation plan's downstream patch size (only for checkpoints without ``nnssl_metadata``).
    """

    architecture: dict
    num_input_channels: int
    spacing: list[float] | None
    transpose_forward: list[int]
    transpose_backward: list[int]
    normalization_schemes: list[str]
    use_mask_for_norm: list[bool]
    recommended_patch_size: list[int] | None = None

    @property
    def total_stride(self) -> list[int]:
        """Product of the network's per-stage strides, per axis (in the pretraining's axis order)."""
        total = [1] * len(self.transpose_forward)
        for stride in self.architecture["arch_kwargs"]["strides"]:
            stride = [stride] * len(total) if isinstance(stride, int) else stride
            total = [t * int(s) for t, s in zip(total, stride)]
        return total


def plans_name_for(name: str | None) -> str:
    """``nnsslPlans`` or ``nnsslPlans_NAME``, so that two pretrainings don't overwrite each other's plans.

    One underscore on purpose: nnU-Net splits result folder names ``TRAINER__PLANS__CONFIGURATION`` on
    ``__`` (find_best_configuration, export_model_to_zip), so a plans name must not contain ``__``.
    """
    if not name:
        return PLANS_BASENAME
    check_name_part("-n", name)
    return f"{PLANS_BASENAME}_{name}"


def read_pretraining_facts(checkpoint: dict, checkpoint_file: str) -> PretrainingFacts:
    """Reads the architecture, channels, spacing, axis order and normalization of a pretrained checkpoint.

    From ``nnssl_metadata`` (nnssl's checkpoints), else from the ecosystem's ``nnssl_adaptation_plan``.
    """
    meta = checkpoint.get("nnssl_metadata")
    if not isinstance(meta, dict):
        facts = PretrainingFacts(**facts_from_adaptation_plan(read_adaptation_plan(checkpoint, checkpoint_file),
                                                              checkpoint_file))
        _check_3d(facts, checkpoint_file)
        return facts
    keys = ("architecture", "num_input_channels", "spacing", "transpose_forward", "transpose_backward",
            "normalization_schemes", "use_mask_for_norm")
    missing = [k for k in keys if meta.get(k) is None]
    if missing:
        raise NnsslError(
            f"{checkpoint_file}: nnssl_metadata lacks {', '.join(missing)}; "
            f"re-run nnssl_pretrain with this nnssl"
        )
    facts = PretrainingFacts(
        architecture=copy.deepcopy(meta["architecture"]),
        num_input_channels=int(meta["num_input_channels"]),
        spacing=[float(s) for s in meta["spacing"]],
        transpose_forward=[int(i) for i in meta["transpose_forward"]],
        transpose_backward=[int(i) for i in meta["transpose_backward"]],
        normalization_schemes=list(meta["normalization_schemes"]),
        use_mask_for_norm=[bool(b) for b in meta["use_mask_for_norm"]],
    )
    _check_3d(facts, checkpoint_file)
    return facts


def _check_3d(facts: PretrainingFacts, checkpoint_file: str) -> None:
    strides = facts.architecture.get("arch_kwargs", {}).get("strides")
    if (facts.spacing is not None and len(facts.spacing) != 3) or not strides or any(
        not isinstance(s, int) and len(s) != 3 for s in strides
    ):
        raise NnsslError(
            f"{checkpoint_file}: the pretrained network is not 3D; nnssl fine-tunes 3D networks only"
        )


def round_patch_size(patch_size: list[int], total_stride: list[int]) -> list[int]:
    """The nearest multiple of the network's total stride per axis, at least one stride."""
    return [max(int(s), round(p / s) * int(s)) for p, s in zip(patch_size, total_stride)]


def check_patch_size(patch_size: list[int], total_stride: list[int], checkpoint_file: str) -> list[int]:
    """Validates a user-given patch size against the pretrained network's total stride."""
    if len(patch_size) != 3 or any(p % s for p, s in zip(patch_size, total_stride)):
        suggestion = round_patch_size(list(patch_size), total_stride) if len(patch_size) == 3 else None
        raise NnsslError(
            f"--patch-size {' '.join(map(str, patch_size))}: must be divisible by the network's total stride "
            f"{total_stride} of {checkpoint_file} (e.g. --patch-size {' '.join(map(str, suggestion or []))})"
        )
    return [int(p) for p in patch_size]


def checkpoint_reference(checkpoint_file: str) -> str:
    """The checkpoint path as recorded in the plans: relative to the results folder when it lies there."""
    path = os.path.realpath(checkpoint_file)
    results = optional_nnunet_folder(RESULTS_ENV)
    if results:
        root = os.path.realpath(results)
        # commonpath (not startswith) so that /results2/x is not taken to be under /results
        if os.path.commonpath([root, path]) == root:
            return os.path.relpath(path, root)
    return path


def _dataset_files(dataset: str) -> tuple[str, dict, dict, str]:
    """(dataset_name, raw dataset.json, fingerprint, preprocessed folder), with one-line errors."""
    raw_root = nnunet_folder(RAW_ENV)
    pre_root = preprocessed_root()
    dataset_name = dataset_name_from_id(dataset)
    dataset_json_file = os.path.join(raw_root, dataset_name, "dataset.json")
    if not os.path.isfile(dataset_json_file):
        raise NnsslError(
            f"{dataset_json_file}: not found; nnU-Net's planner needs the raw dataset in nnUNet_raw"
        )
    fingerprint_file = os.path.join(pre_root, dataset_name, "dataset_fingerprint.json")
    if not os.path.isfile(fingerprint_file):
        raise NnsslError(
            f"{fingerprint_file}: not found; run nnUNetv2_extract_fingerprint -d {dataset} first"
        )
    folder = os.path.dirname(fingerprint_file)
    return dataset_name, load_json(dataset_json_file), load_json(fingerprint_file), folder


def _check_compatible(dataset: str, dataset_json: dict, fingerprint: dict, facts: PretrainingFacts,
                      checkpoint_file: str) -> None:
    """Channel count and dimensionality conflicts between the dataset and the pretraining."""
    channels = num_input_channels(dataset_json)
    # a 1-channel stem is adapted to more channels at fine-tuning (repeat + rescale, nnSSLTrainer)
    if channels != facts.num_input_channels and facts.num_input_channels != 1:
        raise NnsslError(
            f"dataset {dataset} has {channels} input channel(s) (dataset.json channel_names) but "
            f"{checkpoint_file} was pretrained with {facts.num_input_channels}; only a 1-channel "
            f"pretraining adapts to other channel counts: pretrain on data with {channels} channel(s)"
        )
    shapes = fingerprint.get("shapes_after_crop", [])
    if shapes and all(len(s) == 3 and int(s[0]) == 1 for s in shapes):
        raise NnsslError(
            f"dataset {dataset} is 2D (every image has a single slice) but {checkpoint_file} holds a "
            f"3D network; fine-tune it with a 3D dataset or train this one with nnU-Net's 2d configuration"
        )


class _PlannerWithoutSaving(ExperimentPlanner):
    """nnU-Net's default planner that keeps its plans in memory.

    Why: ``plan_experiment`` would otherwise write (and merge into) the user's ``nnUNetPlans.json``.
    """

    def save_plans(self, plans: dict) -> None:
        recursive_fix_for_json_export(plans)


@contextlib.contextmanager
def _planning_environment() -> Iterator[None]:
    """Silences the planner's prints and avoids its crash with ``nnUNet_n_proc_DA=0``.

    Why: the planner's VRAM estimate calls ``torch.set_num_threads(nnUNet_n_proc_DA)``, which fails for 0,
    a value people set for quiet CPU training.
    """
    saved = os.environ.get(ENV_N_PROC_DA)
    if saved is not None and saved.strip() in ("0", ""):
        os.environ[ENV_N_PROC_DA] = "1"
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        if saved is not None:
            os.environ[ENV_N_PROC_DA] = saved
        logger.debug("nnU-Net planner output:\n%s", buffer.getvalue())


def run_nnunet_planner(dataset_name: str, target_spacing: list[float] | None, dataset: str) -> dict:
    """Plans of nnU-Net's ExperimentPlanner for the dataset (``target_spacing`` in the files' axis order)."""
    with _planning_environment():
        planner = _PlannerWithoutSaving(
            dataset_name,
            overwrite_target_spacing=None if target_spacing is None else [float(s) for s in target_spacing],
        )
        plans = planner.plan_experiment()
    if CONFIGURATION not in plans["configurations"]:
        raise NnsslError(
            f"dataset {dataset}: nnU-Net plans only a 2d configuration for it, but the pretrained network "
            f"is 3D; fine-tune with a 3D dataset"
        )
    return plans


def _to_pretraining_axes(values: list, planner_forward: list[int], pretraining_forward: list[int]) -> list:
    """Reorders a per-axis vector from the planner's transposed axes to the pretraining's."""
    return [values[list(planner_forward).index(axis)] for axis in pretraining_forward]


def compose_plans(planner_plans: dict, facts: PretrainingFacts, plans_name: str, patch_size: list[int],
                  batch_size: int, checkpoint_ref: str) -> dict:
    """nnU-Net's plans for the dataset with the pretraining's network, axis order and normalization.

    ``patch_size`` is in the pretraining's axis order.
    """
    auto = planner_plans["configurations"][CONFIGURATION]
    forward = planner_plans["transpose_forward"]

    def reorder(values: list) -> list:
        return _to_pretraining_axes(list(values), forward, facts.transpose_forward)

    schemes, masks = list(facts.normalization_schemes), list(facts.use_mask_for_norm)
    channels = len(auto["normalization_schemes"])
    if len(schemes) == 1 and channels > 1:  # a 1-channel pretraining adapted to more channels
        schemes, masks = schemes * channels, masks * channels
    configuration = copy.deepcopy(auto)
    configuration.update(
        data_identifier=f"{plans_name}_{CONFIGURATION}",
        batch_size=int(batch_size),
        patch_size=[int(p) for p in patch_size],
        median_image_size_in_voxels=reorder(auto["median_image_size_in_voxels"]),
        spacing=[float(s) for s in reorder(auto["spacing"])],
        normalization_schemes=schemes,
        use_mask_for_norm=masks,
        architecture=copy.deepcopy(facts.architecture),
    )
    plans = copy.deepcopy(planner_plans)
    plans.update(
        plans_name=plans_name,
        original_median_spacing_after_transp=reorder(planner_plans["original_median_spacing_after_transp"]),
        original_median_shape_after_transp=reorder(planner_plans["original_median_shape_after_transp"]),
        transpose_forward=list(facts.transpose_forward),
        transpose_backward=list(facts.transpose_backward),
        configurations={CONFIGURATION: configuration},
        # the automatic choices are nnU-Net's default planner's (the subclass only skips saving)
        experiment_planner_used=ExperimentPlanner.__name__,
    )
    plans[PLANS_KEY] = checkpoint_ref
    recursive_fix_for_json_export(plans)
    return plans


def _adaptable_in_proj(theirs, ours) -> bool:
    """A 1-input-channel conv kernel that nnSSLTrainer repeats for more channels; shapes (out, C, k, k, k)."""
    if theirs is None or theirs.ndim != 5 or ours.ndim != 5 or theirs.shape[1] != 1:
        return False
    return theirs.shape[0] == ours.shape[0] and theirs.shape[2:] == ours.shape[2:]


def validate_plans(plans: dict, dataset_json: dict, checkpoint: dict, checkpoint_file: str) -> None:
    """Loads the plans with PlansManager, builds the network and compares its shapes with the checkpoint's.

    Encoder mismatches are errors (no transfer possible); other mismatches outside the segmentation head
    are warnings (the encoder still transfers; a full transfer would fail).
    """
    manager = PlansManager(copy.deepcopy(plans))
    manager.get_configuration(CONFIGURATION)
    num_heads = manager.get_label_manager(dataset_json).num_segmentation_heads
    try:
        network = build_network(plans, CONFIGURATION, num_input_channels(dataset_json), num_heads)
    except Exception as e:
        raise NnsslError(
            f"{checkpoint_file}: its architecture does not build for this dataset ({type(e).__name__}: {e}); "
            f"re-run nnssl_pretrain with this nnssl"
        ) from e
    encoder_prefix = getattr(network, "key_to_encoder", "encoder")
    renames = prefix_renames(checkpoint, encoder_prefix, getattr(network, "key_to_stem", "encoder.stem"))
    theirs = {rename_key(k, renames): v for k, v in checkpoint["network_weights"].items()}
    encoder_prefix += "."
    mismatched = [
        key for key, value in network.state_dict().items()
        if ".seg_layers." not in key
        and (key not in theirs or tuple(theirs[key].shape) != tuple(value.shape))
        and not _adaptable_in_proj(theirs.get(key), value)
    ]
    encoder_mismatch = [k for k in mismatched if k.startswith(encoder_prefix)]
    if encoder_mismatch:
        raise NnsslError(
            f"{checkpoint_file}: network_weights do not fit the network its metadata (or adaptation plan) "
            f"describes (first mismatch: {encoder_mismatch[0]}); the checkpoint is inconsistent, re-run "
            f"nnssl_pretrain"
        )
    if mismatched:
        logger.warning("%d non-encoder weights of %s do not fit (first: %s); only the encoder will transfer",
                       len(mismatched), checkpoint_file, mismatched[0])


def plan_like_pretrained(
    dataset: str,
    pretrained: str | PretrainedCheckpoint,
    name: str | None = None,
    keep_dataset_spacing: bool = False,
    patch_size: list[int] | None = None,
    batch_size: int | None = None,
) -> PlanLikeResult:
    """Writes ``$nnUNet_preprocessed/<dataset>/<plans_name>.json`` for fine-tuning ``pretrained``.

    ``dataset``: id or name; ``pretrained``: nnssl_pretrain output folder, checkpoint file or model repository
    (or what ``resolve_pretrained`` made of it); ``name``: plans name suffix; ``patch_size`` (pretraining axis
    order) and ``batch_size`` override nnU-Net's choice. Raises ``NnsslError`` for every conflict the user can fix.
    """
    plans_name = plans_name_for(name)
    dataset_name, dataset_json, fingerprint, folder = _dataset_files(dataset)
    if not isinstance(pretrained, PretrainedCheckpoint):
        pretrained = resolve_pretrained(pretrained, "--pretrained")
    checkpoint_file = pretrained.path
    checkpoint = load_checkpoint(checkpoint_file)
    facts = read_pretraining_facts(checkpoint, checkpoint_file)
    _check_compatible(dataset, dataset_json, fingerprint, facts, checkpoint_file)
    stride = facts.total_stride
    if patch_size is not None:
        patch_size = check_patch_size(list(patch_size), stride, checkpoint_file)

    # the planner takes the target spacing in the image files' axis order; the metadata's is transposed
    target = None if keep_dataset_spacing or facts.spacing is None else \
        [facts.spacing[facts.transpose_backward[j]] for j in range(3)]
    planner_plans = run_nnunet_planner(dataset_name, target, dataset)
    auto = planner_plans["configurations"][CONFIGURATION]
    if patch_size is None and facts.recommended_patch_size is not None:
        # as nnU-Net's fine-tuning from SSL checkpoints: the adaptation plan's patch size, batch size 2
        patch_size = round_patch_size(facts.recommended_patch_size, stride)
        batch_size = RECOMMENDED_PATCH_BATCH_SIZE if batch_size is None else batch_size
        logger.info("recommended_downstream_patchsize %s -> %s", facts.recommended_patch_size, patch_size)
    if patch_size is None:
        auto_patch = _to_pretraining_axes(list(auto["patch_size"]), planner_plans["transpose_forward"],
                                          facts.transpose_forward)
        patch_size = round_patch_size(auto_patch, stride)
        logger.info("nnU-Net's patch size %s -> %s (divisible by stride %s)", auto_patch, patch_size, stride)
    # a repository is recorded pinned to the commit it resolved to: every fine-tuning run gets the same weights
    reference = pretrained.repository or checkpoint_reference(checkpoint_file)
    plans = compose_plans(planner_plans, facts, plans_name, patch_size,
                          batch_size if batch_size is not None else auto["batch_size"], reference)
    validate_plans(plans, dataset_json, checkpoint, checkpoint_file)
    plans_file = os.path.join(folder, plans_name + ".json")
    write_json_atomic(plans_file, plans, indent=4)  # no half-written plans
    configuration = plans["configurations"][CONFIGURATION]
    return PlanLikeResult(plans_file, plans_name, CONFIGURATION, configuration["patch_size"],
                          configuration["batch_size"], configuration["spacing"], reference, plans)
