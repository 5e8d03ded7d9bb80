"""What every SSL method provides to the pretraining loop, and the module the loop trains."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn


@dataclass
class StepOutput:
    """One forward pass of a method.

    loss: scalar; preview: three tensors for the validation preview figure, each (B, C, Z, Y, X),
    in display order (e.g. ``input``, ``masked``, ``reconstruction``), in image units.
    figures: scalars that show whether the method learns, computed in validation only (model in eval
    mode): ``"trivial"``, the loss of the trivial answer on the same batch (restoration methods), or
    the two-view methods' similarities of positive and negative pairs.
    """

    loss: torch.Tensor
    preview: dict[str, torch.Tensor]
    figures: dict[str, torch.Tensor] = field(default_factory=dict)


class SSLModel(nn.Module):
    """nnU-Net's network plus the method's own modules (projection heads, mask tokens, a momentum
    target): the one module the optimizer, DistributedDataParallel and checkpoints see.

    ``network`` is nnU-Net's plain network (its weights are what fine-tuning loads);
    ``run_network`` is the module to call for a full forward pass (the compiled network, if any).
    """

    def __init__(self, network: nn.Module, heads: nn.ModuleDict, method: SSLMethod,
                 run_network: nn.Module | None = None) -> None:
        super().__init__()
        self.network, self.heads = network, heads
        # plain attributes, not submodules: the compiled wrapper shares the network's parameters
        self.__dict__["run_network"] = run_network or network
        self.__dict__["method"] = method

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> StepOutput:
        return self.method.forward(self, images, generator)


class SSLMethod(ABC):
    """An SSL objective on top of the network nnU-Net plans.

    The network is built by the loop with ``num_output_channels(C)`` outputs; the method decides
    what goes in and what the loss compares. Settings are plain JSON values (stored in checkpoints);
    each is a constructor argument with a documented default (``--method-arg key=value``).

    ``trains_decoder = False`` marks methods whose loss sees only encoder features: the loop freezes
    the decoder (no optimizer state, no gradient all-reduce), and fine-tuning transfers the encoder.
    """

    method_name: str = ""
    trains_decoder: bool = True

    def __init__(self, patch_size: Sequence[int], num_input_channels: int) -> None:
        self.patch_size = tuple(int(p) for p in patch_size)
        self.num_input_channels = num_input_channels

    @staticmethod
    def num_output_channels(num_input_channels: int) -> int:
        return num_input_channels

    def build_heads(self, network: nn.Module) -> nn.ModuleDict:
        """Modules the method trains beside the network (none by default). Parameters with
        ``requires_grad=False`` (a momentum target) are saved and restored but not optimized."""
        return nn.ModuleDict()

    def after_optimizer_step(self, model: SSLModel, progress: float) -> None:
        """Called after every optimizer step; ``progress`` is the fraction of training done, in [0, 1]."""
        return None

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """The method's settings as plain JSON values."""

    @abstractmethod
    def forward(self, model: SSLModel, images: torch.Tensor, generator: torch.Generator) -> StepOutput:
        """Loss for a batch of preprocessed, augmented patches ``images`` of shape (B, C, Z, Y, X)."""


T = TypeVar("T", bound=type)

# name -> SSLMethod subclass, looked up through ``nnssl.pretraining.methods.registry``
REGISTERED_METHODS: dict[str, type] = {}


def register_method(name: str) -> Callable[[T], T]:
    """Class decorator: makes an ``SSLMethod`` subclass available as ``-m name``."""

    def decorator(cls: T) -> T:
        if name in REGISTERED_METHODS and REGISTERED_METHODS[name] is not cls:
            raise ValueError(f"SSL method name '{name}' is already registered by {REGISTERED_METHODS[name].__name__}")
        REGISTERED_METHODS[name] = cls
        cls.method_name = name
        return cls

    return decorator
