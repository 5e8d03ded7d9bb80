"""nnssl: self-supervised pretraining for nnU-Net v2.

Kept import-free on purpose: ``nnssl._startup`` runs in every Python process of the environment.
"""

__version__ = "0.1.0"
