"""Shim for nnU-Net's trainer lookup (``nnUNet_extTrainer``; set by ``nnssl._startup`` at start-up).

nnU-Net imports every ``.py`` file of this folder as a TOP-LEVEL module (this folder on ``sys.path``),
so this file holds only an absolute re-export of ``nnssl.trainers.__all__`` (the one list of trainers):
the classes stay ``nnssl.trainers.*`` classes, imported once, and ``issubclass(..., nnUNetTrainer)``
holds. The folder has no ``__init__.py`` on purpose: it is not a package and nothing should import it
as ``nnssl.trainers.nnunet_ext``.
"""

import nnssl.trainers

globals().update({name: getattr(nnssl.trainers, name) for name in nnssl.trainers.__all__})
__all__ = list(nnssl.trainers.__all__)
