"""What every SSL method provides to the pretraining loop."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class StepOutput:
    """One forward pass of a method.

    loss: scalar; preview: tensors for the reconstruction preview, each (B, C, Z, Y, X)
    (``input``, ``masked``, ``reconstruction``).
    """

    loss: torch.Tensor
    preview: dict[str, torch.Tensor]


class SSLMethod(ABC):
    """An SSL objective on top of the network nnU-Net plans.

    The network is built by the loop with ``num_output_channels(C)`` outputs; the method decides
    what goes in and what the loss compares. Settings are plain JSON values (stored in checkpoints).
    """

    method_name: str = ""

    def __init__(self, patch_size: Sequence[int], num_input_channels: int, **settings: Any) -> None:
        self.patch_size = tuple(int(p) for p in patch_size)
        self.num_input_channels = num_input_channels

    @staticmethod
    def num_output_channels(num_input_channels: int) -> int:
        return num_input_channels

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """The method's settings as plain JSON values."""

    @abstractmethod
    def forward(self, network: nn.Module, images: torch.Tensor, generator: torch.Generator) -> StepOutput:
        """Loss for a batch of preprocessed, augmented patches ``images`` of shape (B, C, Z, Y, X)."""
