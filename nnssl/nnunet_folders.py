"""nnU-Net's three folders, read from the environment in one place (nnU-Net's ``setting_up_paths``): one check,
one message. Reading an environment variable is not an nnU-Net internal, so this sits on the bottom floor."""

from __future__ import annotations

import os

from nnssl.errors import NnsslError

RAW_ENV = "nnUNet_raw"
PREPROCESSED_ENV = "nnUNet_preprocessed"
RESULTS_ENV = "nnUNet_results"


def nnunet_folder(variable: str, hint: str = "") -> str:
    """The folder in the environment variable ``variable`` (one of the three above); an NnsslError saying how to
    set it (plus ``hint``, e.g. " (the folder nnUNetv2_train wrote the model into)") when it is not set."""
    folder = os.environ.get(variable)
    if not folder:
        raise NnsslError(f"{variable} is not set; export it as for nnU-Net (see nnU-Net's setting_up_paths){hint}")
    return folder


def optional_nnunet_folder(variable: str) -> str | None:
    """The folder in ``variable``, or None when it is not set (for uses that work without it)."""
    return os.environ.get(variable) or None
