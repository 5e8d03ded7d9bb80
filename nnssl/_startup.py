"""Runs at interpreter start-up (from ``nnssl_ext_trainer.pth``): registers nnssl's trainers with nnU-Net.

nnU-Net v2 looks for trainers outside its own package only in the folders listed in the
environment variable ``nnUNet_extTrainer``. Setting it here (appending, never replacing) makes
``nnUNetv2_train -tr nnSSLTrainer`` work right after ``pip install``; child processes, such as
nnU-Net's DDP workers, inherit the variable. Must stay tiny and import nothing heavy.
"""

import os

TRAINER_SHIM_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trainers", "nnunet_ext")


def register_trainer_folder(folder: str = TRAINER_SHIM_FOLDER) -> None:
    """Appends ``folder`` to ``nnUNet_extTrainer`` (once); also used by benchmarks for their own trainers."""
    current = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if folder not in current:
        os.environ["nnUNet_extTrainer"] = os.pathsep.join([*current, folder])


register_trainer_folder()
