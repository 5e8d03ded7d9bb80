"""Build hook: installs ``nnssl_ext_trainer.pth`` next to the package in site-packages.

A ``.pth`` line starting with ``import`` runs at interpreter start-up. Ours imports
``nnssl._startup``, which appends nnssl's trainer shim folder to ``nnUNet_extTrainer`` so that
``nnUNetv2_train -tr nnSSLTrainer`` (and every DDP worker it spawns) finds nnssl's trainers.
The line swallows every exception: it runs in every Python process of the environment.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PTH_NAME = "nnssl_ext_trainer.pth"
PTH_LINE = (
    "import sys; exec('try:\\n import nnssl._startup\\nexcept Exception:\\n pass')\n"
)


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        folder = tempfile.mkdtemp(prefix="nnssl-build-")
        pth_file = os.path.join(folder, PTH_NAME)
        with open(pth_file, "w") as f:
            f.write(PTH_LINE)
        key = "force_include_editable" if version == "editable" else "force_include"
        build_data.setdefault(key, {})[pth_file] = PTH_NAME
