"""nnU-Net's three folders, read from the environment in one place (nnU-Net's ``setting_up_paths``): one check,
one message. Reading an environment variable is not an nnU-Net internal, so this sits on the bottom floor."""

from __future__ import annotations

import os
import re

from nnssl.errors import NnsslError

RAW_ENV = "nnUNet_raw"
PREPROCESSED_ENV = "nnUNet_preprocessed"
RESULTS_ENV = "nnUNet_results"
# where nnU-Net master's nnUNetv2_preprocess_like_nnssl keeps checkpoints downloaded from Hugging Face
PRETRAINED_MODELS_ENV = "nnssl_pretrained_models"


def nnunet_folder(variable: str, hint: str = "") -> str:
    """The folder in the environment variable ``variable`` (one of those above); an NnsslError saying how to
    set it (plus ``hint``, e.g. " (the folder nnUNetv2_train wrote the model into)") when it is not set."""
    folder = os.environ.get(variable)
    if not folder:
        raise NnsslError(f"{variable} is not set; export it as for nnU-Net (see nnU-Net's setting_up_paths){hint}")
    return folder


NAME_PATTERN = r"[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?"


def check_name_part(flag: str, name: str) -> None:
    """A name that becomes part of a plans or folder name: letters, digits, '-', '.' and single '_' (nnU-Net
    splits ``TRAINER__PLANS__CONFIGURATION`` folder names on ``__``); an NnsslError naming ``flag`` otherwise."""
    if not re.fullmatch(NAME_PATTERN, name) or "__" in name:
        raise NnsslError(f"{flag} {name}: use letters, digits, '-', '.' and single '_' only (it becomes a file name)")


def name_part_from(text: str, default: str) -> str:
    """``text`` as a name ``check_name_part`` accepts: each run of other characters becomes one '_', and the ends
    are trimmed to a letter or digit; ``default`` when nothing is left."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_.-") or default


def optional_nnunet_folder(variable: str) -> str | None:
    """The folder in ``variable``, or None when it is not set (for uses that work without it)."""
    return os.environ.get(variable) or None
