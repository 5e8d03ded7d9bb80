"""nnU-Net's image reader classes, the ones ``nnUNetv2_plan_and_preprocess`` would pick for a file ending."""

from __future__ import annotations

from nnunetv2.imageio.base_reader_writer import BaseReaderWriter


def nnunet_reader(tiff: bool) -> BaseReaderWriter:
    """``Tiff3DIO`` for TIFF stacks, else ``SimpleITKIO``. Light (numpy + SimpleITK / tifffile): no torch import."""
    if tiff:
        from nnunetv2.imageio.tif_reader_writer import Tiff3DIO

        return Tiff3DIO()
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    return SimpleITKIO()
