"""Checkpoint files and where they live: the bottom layer every other part of nnssl reads and writes through.

``layout``: file names, nnU-Net's results folder, the flow-1 run folder; ``files``: atomic writes and loading;
``adaptation_plan``: the nnU-Net SSL ecosystem's entry; ``lookup``: which checkpoint a fine-tuning starts from.
Imports neither nnU-Net nor the rest of nnssl (only ``nnssl.errors`` and ``nnssl.atomic_files``).
"""
