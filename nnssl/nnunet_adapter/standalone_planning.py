"""nnU-Net's planner on a folder of unlabeled images, in a private workspace (flow 2).

nnU-Net's planners want ``nnUNet_raw/DatasetXXX_*/dataset.json`` and a fingerprint in
``nnUNet_preprocessed``. nnssl builds both inside the output folder (the dataset.json lists the
user's files by absolute path, nothing is copied) and points nnU-Net's path variables there only
while planning, so the user's own nnU-Net folders are never touched.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import nnunetv2
from batchgenerators.utilities.file_and_folder_operations import load_json, save_json
from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiment_dataset
from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

from nnssl.errors import NnsslError
from nnssl.nnunet_folders import PREPROCESSED_ENV, RAW_ENV, RESULTS_ENV
from nnssl.volumes.tissue_sampling import TISSUE_LABELS

WORKSPACE_DATASET_ID = 999
WORKSPACE_DATASET_NAME = f"Dataset{WORKSPACE_DATASET_ID}_nnsslPretrain"


@contextlib.contextmanager
def nnunet_paths(raw: str, preprocessed: str, results: str | None = None) -> Iterator[None]:
    """Points nnU-Net's path variables (read lazily by nnunetv2 2.8) at a workspace, then restores them."""
    names = {RAW_ENV: raw, PREPROCESSED_ENV: preprocessed}
    if results is not None:
        names[RESULTS_ENV] = results
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class PlanningWorkspace:
    """``<output>/nnUNet_workspace/{nnUNet_raw,nnUNet_preprocessed}/Dataset999_nnsslPretrain``."""

    def __init__(self, output_folder: str) -> None:
        self.root = os.path.join(output_folder, "nnUNet_workspace")
        self.raw = os.path.join(self.root, RAW_ENV)
        self.preprocessed = os.path.join(self.root, PREPROCESSED_ENV)
        self.raw_dataset = os.path.join(self.raw, WORKSPACE_DATASET_NAME)
        self.preprocessed_dataset = os.path.join(self.preprocessed, WORKSPACE_DATASET_NAME)
        self.fingerprint_file = os.path.join(self.preprocessed_dataset, "dataset_fingerprint.json")

    def write_dataset_json(self, case_files: dict[str, list[str]], channel_names: list[str], ending: str) -> dict:
        dataset_json = {
            "channel_names": {str(i): name for i, name in enumerate(channel_names)},
            # nnU-Net's planner needs a label map to plan the output layer; no label file is ever read
            "labels": TISSUE_LABELS,
            "numTraining": len(case_files),
            "file_ending": ending,
            "dataset": {case_id: {"images": files, "label": ""} for case_id, files in case_files.items()},
            "description": "unlabeled images for nnssl pretraining; labels are not used",
        }
        # Named, not detected: nnU-Net detects a reader by reading an example image whole, which a volume
        # larger than memory does not survive. Zarr and plane folders are read by nnssl itself.
        dataset_json["overwrite_image_reader_writer"] = "Tiff3DIO" if ending in LAZY_READER_ENDINGS else "SimpleITKIO"
        if ending not in NNUNET_READABLE_ENDINGS:
            dataset_json["file_ending"] = ".tif"
        os.makedirs(self.raw_dataset, exist_ok=True)
        os.makedirs(self.preprocessed_dataset, exist_ok=True)
        save_json(dataset_json, os.path.join(self.raw_dataset, "dataset.json"), sort_keys=False)
        save_json(dataset_json, os.path.join(self.preprocessed_dataset, "dataset.json"), sort_keys=False)
        return dataset_json

    def paths(self) -> contextlib.AbstractContextManager:
        return nnunet_paths(self.raw, self.preprocessed)


NNUNET_READABLE_ENDINGS = (".nii.gz", ".nii", ".mha", ".nrrd", ".tif", ".tiff")
LAZY_READER_ENDINGS = (".tif", ".tiff", ".zarr", ".ome.zarr", "")  # "": a folder of 2D planes


@contextlib.contextmanager
def _planner_safe_worker_count() -> Iterator[None]:
    """nnU-Net's planner calls ``torch.set_num_threads(nnUNet_n_proc_DA)``, which fails for 0."""
    saved = os.environ.get("nnUNet_n_proc_DA")
    if saved is not None and int(saved) < 1:
        os.environ["nnUNet_n_proc_DA"] = "1"
    try:
        yield
    finally:
        if saved is not None:
            os.environ["nnUNet_n_proc_DA"] = saved


def find_planner_class(name: str) -> type:
    planner = recursive_find_python_class(
        os.path.join(nnunetv2.__path__[0], "experiment_planning"), name, "nnunetv2.experiment_planning"
    )
    if planner is None:
        raise NnsslError(
            f"-pl {name}: no such nnU-Net experiment planner; use e.g. ExperimentPlanner, nnUNetPlannerResEncM"
        )
    return planner


def plan_workspace(workspace: PlanningWorkspace, planner_name: str, gpu_memory_target: float | None,
                   printed_to: str) -> dict:
    """Runs nnU-Net's planner in the workspace and returns the plans it saved.

    What the planner prints (its whole configuration dump, with ``print``) is appended to the file
    ``printed_to`` (the run's log), not shown in the terminal.
    """
    planner_class = find_planner_class(planner_name)
    with workspace.paths(), _planner_safe_worker_count(), open(printed_to, "a") as printed, \
            contextlib.redirect_stdout(printed):
        _, plans_name = plan_experiment_dataset(
            WORKSPACE_DATASET_ID, planner_class, gpu_memory_target_in_gb=gpu_memory_target
        )
        return load_json(os.path.join(workspace.preprocessed_dataset, plans_name + ".json"))
