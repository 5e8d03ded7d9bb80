import pytest
import torch
from torch import nn

from nnssl.errors import NnsslError
from nnssl.pretraining.methods.base import SSLMethod
from nnssl.pretraining.registry import available_methods, get_method, register_method


def test_unknown_method_names_the_known_ones():
    with pytest.raises(NnsslError, match="choose one of: .*mae"):
        get_method("does-not-exist")


def test_duplicate_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        @register_method("mae")
        class Other(SSLMethod):
            pass


@pytest.mark.parametrize("name", available_methods())
def test_every_registered_method_trains_a_tiny_network(name):
    """One step of each method on a 1x1x1 conv 'network': finite loss, gradients flow, settings are JSON."""
    import json

    method_class = get_method(name)
    method = method_class((8, 16, 16), 2)
    network = nn.Conv3d(2, method_class.num_output_channels(2), 1)
    out = method.forward(network, torch.randn(2, 2, 8, 16, 16), torch.Generator().manual_seed(0))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in network.parameters())
    json.dumps(method.settings())
    assert method_class.method_name == name
