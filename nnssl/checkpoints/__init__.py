"""Checkpoint files and where they live: the bottom layer every other part of nnssl reads and writes through.

``layout``: file names, nnU-Net's results folder, the run folders; ``files``: atomic writes and loading;
``adaptation_plan``: the nnU-Net SSL ecosystem's entry; ``hub``: Hugging Face model repositories as a source;
``lookup``: which checkpoint a fine-tuning starts from; ``export`` and ``model_card``: a run as a model repository.
Imports neither nnU-Net nor the rest of nnssl (only the shared files: ``nnssl.errors``, ``nnssl.atomic_files``,
``nnssl.nnunet_folders``, ``nnssl.output_folder``).
"""
