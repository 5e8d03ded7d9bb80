"""transfer_weights: scope, alias handling, shape checks, wrapped networks (pure torch, tiny networks)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn

from nnssl.errors import NnsslError
from nnssl.trainers.weight_transfer import REASON_SEG_HEAD, TransferReport, transfer_weights, unwrap_network

COMMON = dict(
    input_channels=1,
    n_stages=3,
    conv_op=nn.Conv3d,
    kernel_sizes=3,
    strides=(1, 2, 2),
    conv_bias=True,
    norm_op=nn.InstanceNorm3d,
    norm_op_kwargs={"eps": 1e-5, "affine": True},
    nonlin=nn.LeakyReLU,
    nonlin_kwargs={"inplace": True},
)


def make_net(kind: str, num_classes: int, seed: int, features=(8, 16, 32)) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "plain":
        net = PlainConvUNet(
            features_per_stage=features,
            n_conv_per_stage=2,
            num_classes=num_classes,
            n_conv_per_stage_decoder=2,
            **COMMON,
        )
    else:
        net = ResidualEncoderUNet(
            features_per_stage=features,
            n_blocks_per_stage=(1, 1, 1),
            num_classes=num_classes,
            n_conv_per_stage_decoder=(1, 1),
            **COMMON,
        )
    # Affine norm parameters start at 1/0 in every network: randomize so that "equal" means "copied".
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    return net


def snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def is_encoder(net: nn.Module, key: str) -> bool:
    return any(key.startswith(p + ".") for p in (net.key_to_encoder, net.key_to_stem))


@pytest.fixture(params=["plain", "resenc"])
def nets(request):
    """(target network with 3 classes, its weights before transfer, pretrained weights with C=1 head)."""
    target = make_net(request.param, num_classes=3, seed=0)
    pretrained = make_net(request.param, num_classes=1, seed=1)
    return target, snapshot(target), snapshot(pretrained)


def test_encoder_scope_copies_encoder_only(nets):
    target, before, pretrained = nets
    report = transfer_weights(target, pretrained)
    after = target.state_dict()
    for key, value in after.items():
        if is_encoder(target, key) or key.startswith("decoder.encoder."):
            assert torch.equal(value, pretrained[key]), key
        else:
            assert torch.equal(value, before[key]), key
    assert report.scope == "encoder"
    assert all(is_encoder(target, k) for k in report.loaded)


def test_full_scope_copies_decoder_but_never_seg_layers(nets):
    target, before, pretrained = nets
    report = transfer_weights(target, pretrained, scope="full")
    for key, value in target.state_dict().items():
        if ".seg_layers." in key:
            assert torch.equal(value, before[key]), key
        else:
            assert torch.equal(value, pretrained[key]), key
    reasons = dict(report.skipped)
    assert reasons and set(reasons.values()) == {REASON_SEG_HEAD}
    assert any(k.startswith("decoder.stages.") for k in report.loaded)


def test_report_counts_unique_tensors_once(nets):
    target, _, pretrained = nets
    report = transfer_weights(target, pretrained)
    encoder = {k: v for k, v in target.state_dict(keep_vars=True).items() if is_encoder(target, k)}
    unique = {v.data_ptr(): v.numel() for v in encoder.values()}
    assert len(report.loaded) == len(unique) == len(set(report.loaded))
    assert report.num_loaded_parameters == sum(unique.values())
    assert not any(k.startswith("decoder.encoder.") or ".all_modules." in k for k in report.loaded)
    alias_keys = {alias for alias, _ in report.aliases}
    assert any(k.startswith("decoder.encoder.") for k in alias_keys)
    listed = report.loaded + [k for k, _ in report.skipped]
    assert not alias_keys & set(listed)
    text = report.format()
    assert f"{len(unique)} unique tensors, {sum(unique.values()):,} parameters loaded" in text
    assert "out of scope: decoder" in text and REASON_SEG_HEAD in text and "alias" in text


def test_shape_mismatch_names_key_and_shapes_and_copies_nothing():
    target = make_net("plain", num_classes=3, seed=0)
    before = snapshot(target)
    wider = snapshot(make_net("plain", num_classes=3, seed=1, features=(16, 16, 32)))
    with pytest.raises(NnsslError) as err:
        transfer_weights(target, wider)
    message = str(err.value)
    assert "checkpoint incompatible with the dataset's network" in message
    assert "encoder.stages.0.0.convs.0.conv.weight checkpoint (16,1,3,3,3) vs network (8,1,3,3,3)" in message
    assert "\n" not in message
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


def test_missing_in_scope_key_raises():
    target = make_net("plain", num_classes=3, seed=0)
    pretrained = {k: v for k, v in snapshot(target).items() if "stages.2" not in k}
    with pytest.raises(NnsslError, match=r"encoder\.stages\.2\.\S+ missing in checkpoint"):
        transfer_weights(target, pretrained)
    # ...but the encoder scope does not need the decoder at all
    encoder_only = {k: v for k, v in snapshot(target).items() if k.startswith("encoder.")}
    report = transfer_weights(target, encoder_only)
    assert report.loaded


def test_unknown_scope_raises():
    with pytest.raises(NnsslError, match="scope"):
        transfer_weights(make_net("plain", 3, 0), {}, scope="decoder")


def test_in_place_keeps_optimizer_references_and_accepts_prefixed_keys():
    target = make_net("plain", num_classes=3, seed=0)
    optimizer = torch.optim.SGD(target.parameters(), lr=0.1)
    params_before = [id(p) for p in target.parameters()]
    pretrained = {"module." + k: v for k, v in snapshot(make_net("plain", 1, seed=1)).items()}
    transfer_weights(target, pretrained)
    assert [id(p) for p in target.parameters()] == params_before
    first = optimizer.param_groups[0]["params"][0]
    assert torch.equal(first, pretrained["module.encoder.stages.0.0.convs.0.conv.weight"])


def test_transfer_into_compiled_module():
    target = make_net("resenc", num_classes=3, seed=0)
    pretrained = snapshot(make_net("resenc", 1, seed=1))
    compiled = torch.compile(target)  # wrapping is lazy: nothing is compiled until the first call
    assert unwrap_network(compiled) is target
    report = transfer_weights(compiled, pretrained)
    assert isinstance(report, TransferReport)
    key = "encoder.stem.convs.0.conv.weight"
    assert torch.equal(target.state_dict()[key], pretrained[key])


def test_transfer_into_ddp_wrapped_compiled_module(tmp_path):
    target = make_net("plain", num_classes=3, seed=0)
    pretrained = snapshot(make_net("plain", 1, seed=1))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        wrapped = nn.parallel.DistributedDataParallel(torch.compile(target))
        assert unwrap_network(wrapped) is target
        transfer_weights(wrapped, pretrained)
    finally:
        dist.destroy_process_group()
    key = "encoder.stages.2.0.convs.1.conv.weight"
    assert torch.equal(target.state_dict()[key], pretrained[key])
