"""Scoring segmentations against references: nnU-Net's overlap metrics, topology (clDice, Betti-number
errors) and instance metrics over connected components (panoptica), per label, per case and as means.

``nnssl_evaluate`` (``nnssl.cli.evaluate``) runs it on two folders; ``nnssl.evaluation.metrics`` scores
arrays. No nnU-Net import: reading and pairing files is done here.
"""
