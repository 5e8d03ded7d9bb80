"""The only place (besides the trainer subclasses) that imports nnunetv2 internals.

Everything in ``nnssl.pretraining`` reaches nnU-Net through these modules, so a change in nnU-Net's
internals touches this package alone.
"""
