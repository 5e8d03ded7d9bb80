import json

import pytest
import torch

from nnssl.errors import NnsslError
from nnssl.nnunet_adapter.network_parts import decoder_parameters
from nnssl.pretraining.methods.base import SSLMethod, SSLModel
from nnssl.pretraining.methods.registry import (
    available_methods,
    create_method,
    get_method,
    method_arguments,
    parse_method_args,
    register_method,
)
from tests.tiny_networks import ARCHITECTURES, PATCH, tiny_unet


def test_unknown_method_names_the_known_ones():
    with pytest.raises(NnsslError, match="choose one of: .*mae"):
        get_method("does-not-exist")


def test_the_issue_s_methods_are_registered():
    assert {"mae", "sparkmae", "simclr", "byol", "modelsgenesis"} <= set(available_methods())


def test_duplicate_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        @register_method("mae")
        class Other(SSLMethod):
            pass


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("name", available_methods())
def test_every_registered_method_trains_a_tiny_unet(name, architecture):
    """Two steps of each method on nnU-Net's tiny networks: finite loss, the encoder learns, a
    decoder-free method leaves the decoder without gradient, settings are JSON, the preview has 3 rows."""
    torch.manual_seed(0)
    method_class = get_method(name)
    method = create_method(name, PATCH, 1, {})
    network = tiny_unet(architecture, 1, method_class.num_output_channels(1))
    model = SSLModel(network, method.build_heads(network), method)
    generator = torch.Generator().manual_seed(0)
    out = model(torch.randn(2, 1, *PATCH), generator)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert network.encoder.stages[0].parameters().__next__().grad.abs().sum() > 0
    decoder_grads = [p.grad for p in decoder_parameters(network)]
    if method_class.trains_decoder:
        assert any(g is not None and g.abs().sum() > 0 for g in decoder_grads)
    else:
        assert all(g is None for g in decoder_grads)
    method.after_optimizer_step(model, 0.5)
    json.dumps(method.settings())
    assert method_class.method_name == name and len(out.preview) == 3
    assert all(t.ndim == 5 for t in out.preview.values())


@pytest.mark.parametrize("name", available_methods())
def test_settings_are_the_constructor_arguments(name):
    """What settings() records is what the constructor takes (a checkpoint's settings rebuild the method)."""
    method = create_method(name, PATCH, 1, {})
    recorded = {k: v for k, v in method.settings().items() if k in method_arguments(name)}
    assert set(recorded) == set(method_arguments(name))
    assert create_method(name, PATCH, 1, recorded).settings() == method.settings()


def test_method_args_are_typed_like_the_defaults():
    assert parse_method_args("sparkmae", ["mask_ratio=0.5", "block-size=8"]) == {"mask_ratio": 0.5, "block_size": 8}
    assert parse_method_args("byol", ["hidden_dim=64"]) == {"hidden_dim": 64}


@pytest.mark.parametrize("pairs, message", [
    (["mask_ratio"], "key=value"),
    (["momentum=0.9"], "base_momentum=0.996"),
    (["hidden_dim=wide"], "not of type int"),
])
def test_bad_method_args_name_the_settings(pairs, message):
    with pytest.raises(NnsslError, match=message):
        parse_method_args("byol", pairs)


def test_bad_setting_values_are_one_line_errors():
    with pytest.raises(NnsslError, match="method 'sparkmae': mask_ratio must be in"):
        create_method("sparkmae", PATCH, 1, {"mask_ratio": 1.5})
    with pytest.raises(NnsslError, match="has no setting temperature"):
        create_method("mae", PATCH, 1, {"temperature": 0.1})
