import pytest
import torch

from nnssl.nnunet_adapter.network_parts import normalized_over_visible
from nnssl.pretraining.methods.base import SSLModel
from nnssl.pretraining.methods.registry import create_method
from nnssl.pretraining.methods.sparkmae import SparkMAE, _SparseEncoding, visible_at
from tests.tiny_networks import ARCHITECTURES, PATCH, tiny_unet


def test_normalization_uses_visible_positions_only():
    norm = torch.nn.InstanceNorm3d(2, affine=True, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([2.0, 0.5]))
        norm.bias.copy_(torch.tensor([1.0, -1.0]))
    features = torch.randn(1, 2, 2, 4, 4)
    visible = torch.zeros(1, 1, 2, 4, 4)
    visible[..., :2] = 1
    out = normalized_over_visible(norm, features, visible)
    for c in range(2):
        values = features[0, c][visible[0, 0].bool()]
        mean, var = values.mean(), values.var(unbiased=False)
        expected = (values - mean) / torch.sqrt(var + 1e-5) * norm.weight[c] + norm.bias[c]
        assert torch.allclose(out[0, c][visible[0, 0].bool()], expected, atol=1e-5)
    assert out[visible.expand_as(out) == 0].abs().max() == 0


def test_all_visible_equals_plain_instance_norm():
    norm = torch.nn.InstanceNorm3d(3, affine=True)
    features = torch.randn(2, 3, 4, 4, 4)
    assert torch.allclose(normalized_over_visible(norm, features, torch.ones(2, 1, 4, 4, 4)), norm(features),
                          atol=1e-5)


def test_coarse_mask_keeps_every_position_with_visible_input():
    visible = torch.zeros(1, 1, 4, 4, 4)
    visible[0, 0, 0, 0, 0] = 1
    coarse = visible_at(visible, (2, 2, 2))
    assert coarse[0, 0, 0, 0, 0] == 1 and coarse.sum() == 1


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_hidden_positions_stay_empty_through_the_encoder(architecture):
    network = tiny_unet(architecture)
    mask = torch.zeros(2, 1, *PATCH)
    mask[:, :, :8] = 1  # hide the first half along z: whole cells at every resolution
    visible = 1 - mask
    with _SparseEncoding(network, visible) as sparse:
        skips = network.encoder(torch.randn(2, 1, *PATCH) * visible)
    for skip in skips:
        hidden = sparse.visible_for(skip.shape[2:]) == 0
        assert hidden.any() and skip[hidden.expand_as(skip)].abs().max() == 0
    # outside the context the encoder is dense again
    assert all((s != 0).float().mean() > 0.9 for s in network.encoder(torch.randn(2, 1, *PATCH)))


def test_mask_tokens_fill_hidden_positions_and_learn():
    method = create_method("sparkmae", PATCH, 1, {"mask_ratio": 0.5})
    assert isinstance(method, SparkMAE) and method.settings()["block_size_per_axis"] == [2, 4, 4]
    network = tiny_unet()
    model = SSLModel(network, method.build_heads(network), method)
    out = model(torch.randn(2, 1, *PATCH), torch.Generator().manual_seed(0))
    out.loss.backward()
    assert all(token.grad is not None and token.grad.abs().sum() > 0 for token in model.heads["mask_tokens"])
    assert out.preview["masked"].eq(0).float().mean() == pytest.approx(0.5, abs=0.01)
