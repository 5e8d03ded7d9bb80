"""What a run is asked to do: the request (``nnssl_pretrain``'s options), the typed settings that define the
run (stored in the run file and reused by ``--continue``) and the data it pretrains on.

Light on purpose (no torch, no nnU-Net): the command line builds these before any heavy import.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from nnssl.volumes.lazy import DEFAULT_BLOCKWISE_MIN_VOXELS

logger = logging.getLogger(__name__)

DEFAULT_METHOD = "mae"
# a patch every built-in method accepts: the settings are checked before the plans' patch size is known
NOMINAL_PATCH_SIZE = (64, 64, 64)


@dataclass
class PretrainSettings:
    """Everything that defines a run (stored in the run file and reused by ``--continue``)."""

    method: str = DEFAULT_METHOD
    method_settings: dict[str, Any] = field(default_factory=dict)
    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations: int = 10
    batch_size: int | None = None  # None: the plans' batch size
    patch_size: list[int] | None = None  # None: the plans' patch size
    initial_lr: float = 1e-2
    weight_decay: float = 3e-5
    grad_clip: float = 12.0
    seed: int = 12345
    save_every_iterations: int = 0  # 0: the latest checkpoint at the end of every epoch only
    preview_every: int = 10
    val_fraction: float = 0.1
    random_patch_fraction: float = 0.05  # patches drawn uniformly; the others are centred on tissue

    def check(self) -> None:
        """Raises an NnsslError for an unknown method or a bad method setting: the method's class checks them."""
        from nnssl.pretraining.methods.registry import create_method

        create_method(self.method, NOMINAL_PATCH_SIZE, 1, self.method_settings)


def saved_settings(saved: dict, given: PretrainSettings) -> PretrainSettings:
    """The settings a resumed run continues with (those it was started with); logs every given one they override."""
    resumed = PretrainSettings(**saved)
    overridden = [f"{f.name} {getattr(resumed, f.name)!r} (given {getattr(given, f.name)!r})" for f in fields(given)
                  if getattr(resumed, f.name) != getattr(given, f.name)]
    if overridden:
        logger.warning("--continue: the run keeps the settings it was started with, not the given ones: %s",
                       ", ".join(overridden))
    return resumed


@dataclass
class PretrainRequest:
    """What the user asked for (command-line options of ``nnssl_pretrain``)."""

    inputs: list[str]
    dataset: str | None = None  # flow 1
    output_folder: str | None = None  # flow 2
    plans_name: str = "nnUNetPlans"
    configuration: str = "3d_fullres"
    planner: str = "ExperimentPlanner"
    gpu_memory_target: float | None = None
    features_per_stage: list[int] | None = None
    channel_names: list[str] | None = None
    spacing: list[float] | None = None
    device: str = "cuda"
    compile: bool = False
    num_workers: int | None = None
    num_processes: int = 1
    continue_run: bool = False
    progress_bar: bool = True
    blockwise_min_voxels: int = DEFAULT_BLOCKWISE_MIN_VOXELS
    blockwise_workers: int | None = None  # None: blockwise_preprocessing.default_workers()
    settings: PretrainSettings = field(default_factory=PretrainSettings)

    def run_file(self) -> dict:
        """What the run file records of the request."""
        return {"request": asdict(self), "settings": asdict(self.settings)}


@dataclass
class PretrainData:
    """The plans a run pretrains with and the preprocessed unlabeled cases."""

    plans: dict
    configuration: str
    dataset_json: dict
    data_folder: str
    identifiers: list[str]
