import pytest
import torch

from nnssl.pretraining.methods.base import SSLModel
from nnssl.pretraining.methods.registry import create_method
from nnssl.pretraining.methods.views import crop_size, random_crops, two_views
from tests.tiny_networks import PATCH, tiny_unet


def test_crops_are_windows_of_the_patch_that_overlap():
    images = torch.arange(2 * 16 * 32 * 32, dtype=torch.float32).view(2, 1, 16, 32, 32)
    size = crop_size(PATCH, 0.75)
    assert size == (12, 24, 24)
    g = torch.Generator().manual_seed(0)
    a, b = random_crops(images, size, g), random_crops(images, size, g)
    for i in range(2):
        starts = [int(a[i, 0, 0, 0, 0].item()) // s % n for s, n in ((32 * 32, 16), (32, 32), (1, 32))]
        window = images[i, :, starts[0]:starts[0] + 12, starts[1]:starts[1] + 24, starts[2]:starts[2] + 24]
        assert torch.equal(a[i], window)  # a crop is an untouched window
        shared = set(a[i].flatten().tolist()) & set(b[i].flatten().tolist())
        assert len(shared) >= (2 * 12 - 16) * (2 * 24 - 32) ** 2  # the least overlap of two such windows


def test_views_differ_and_are_reproducible():
    images = torch.randn(2, 1, *PATCH)
    v1, v2 = two_views(images, 0.75, torch.Generator().manual_seed(3))
    w1, w2 = two_views(images, 0.75, torch.Generator().manual_seed(3))
    assert torch.equal(v1, w1) and torch.equal(v2, w2) and not torch.allclose(v1, v2)


def test_simclr_trains_only_encoder_and_projector():
    method = create_method("simclr", PATCH, 1, {"projection_dim": 16})
    network = tiny_unet()
    model = SSLModel(network, method.build_heads(network), method)
    out = model(torch.randn(3, 1, *PATCH), torch.Generator().manual_seed(0))
    out.loss.backward()
    assert model.heads["projector"][1][-1].out_features == 16
    assert all(p.grad is not None for p in model.heads.parameters())
    assert network.decoder.seg_layers[-1].weight.grad is None
    assert list(out.preview) == ["input", "view 1", "view 2"]


def test_overlap_is_required():
    with pytest.raises(Exception, match="overlap"):
        create_method("simclr", PATCH, 1, {"crop_fraction": 0.5})
