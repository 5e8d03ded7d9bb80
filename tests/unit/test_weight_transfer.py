"""transfer_weights: scope, alias handling, shape checks, wrapped networks (pure torch, tiny networks)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn

from nnssl.errors import NnsslError
from nnssl.trainers.weight_transfer import (
    REASON_SEG_HEAD,
    TransferReport,
    adapt_in_proj_weight,
    checkpoint_in_proj_keys,
    transfer_weights,
    unwrap_network,
)

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


def make_net(kind: str, num_classes: int, seed: int, features=(8, 16, 32), channels: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    common = {**COMMON, "input_channels": channels}
    if kind == "plain":
        net = PlainConvUNet(
            features_per_stage=features,
            n_conv_per_stage=2,
            num_classes=num_classes,
            n_conv_per_stage_decoder=2,
            **common,
        )
    else:
        net = ResidualEncoderUNet(
            features_per_stage=features,
            n_blocks_per_stage=(1, 1, 1),
            num_classes=num_classes,
            n_conv_per_stage_decoder=(1, 1),
            **common,
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


# ---- input projection: 1-channel pretraining, C-channel fine-tuning -------------------------------------------

IN_PROJ_WEIGHT = {
    "plain": "encoder.stages.0.0.convs.0.conv.weight",
    "resenc": "encoder.stem.convs.0.conv.weight",
}
IN_PROJ_BIAS = {kind: key.removesuffix(".weight") + ".bias" for kind, key in IN_PROJ_WEIGHT.items()}


def expected_in_proj(w: torch.Tensor, channels: int) -> torch.Tensor:
    """Written out by hand: copies of the (8, 1, 3, 3, 3) kernel, each scaled by 1/channels."""
    if channels == 2:
        return torch.cat([w * 0.5, w * 0.5], dim=1)
    if channels == 3:
        return torch.cat([w / 3, w / 3, w / 3], dim=1)
    raise AssertionError(channels)


@pytest.mark.parametrize("kind", ["plain", "resenc"])
@pytest.mark.parametrize("channels", [2, 3])
def test_one_channel_in_proj_is_repeated_and_scaled(kind, channels):
    target = make_net(kind, num_classes=3, seed=0, channels=channels)
    before = snapshot(target)
    pretrained = snapshot(make_net(kind, num_classes=1, seed=1))
    key = IN_PROJ_WEIGHT[kind]
    assert pretrained[key].shape == (8, 1, 3, 3, 3) and before[key].shape == (8, channels, 3, 3, 3)

    report = transfer_weights(target, pretrained)

    after = target.state_dict()
    expected = expected_in_proj(pretrained[key], channels)
    assert torch.equal(after[key], expected)
    # keys sharing the kernel: convs.0.all_modules.0.weight (and decoder.encoder.* in the plain U-Net)
    aliases = {name for name, value in after.items() if value.data_ptr() == after[key].data_ptr()}
    assert key.replace(".conv.", ".all_modules.0.") in aliases
    for name, value in after.items():
        if name in aliases:
            assert torch.equal(value, expected), name
        elif is_encoder(target, name) or name.startswith("decoder.encoder."):
            assert torch.equal(value, pretrained[name]), name
        else:
            assert torch.equal(value, before[name]), name
    assert report.adapted == [(key, 1, channels)]
    assert key in report.loaded
    assert f"adapted input projection {key}: 1 -> {channels} input channels" in report.format()


def test_adapt_in_proj_weight_matches_handwritten_tensor_for_2d_kernels():
    w = torch.randn(4, 1, 3, 3)
    assert torch.equal(adapt_in_proj_weight(w, 2), torch.cat([w * 0.5, w * 0.5], dim=1))
    assert torch.equal(adapt_in_proj_weight(w, 1), w)
    with pytest.raises(NnsslError, match="only a 1-channel input projection is adapted"):
        adapt_in_proj_weight(torch.randn(4, 2, 3, 3), 4)


@pytest.mark.parametrize("kind", ["plain", "resenc"])
def test_adapted_first_conv_keeps_the_activation_of_a_constant_image(kind):
    pretrained_net = make_net(kind, num_classes=1, seed=1).eval()
    target = make_net(kind, num_classes=3, seed=0, channels=2).eval()
    transfer_weights(target, snapshot(pretrained_net))
    conv_name = IN_PROJ_WEIGHT[kind].removesuffix(".weight")
    conv_1ch, conv_2ch = pretrained_net.get_submodule(conv_name), target.get_submodule(conv_name)
    assert conv_2ch.bias is not None and torch.equal(conv_2ch.bias, conv_1ch.bias)
    image_1ch = torch.full((1, 1, 8, 8, 8), 0.7)
    image_2ch = torch.full((1, 2, 8, 8, 8), 0.7)
    with torch.no_grad():
        torch.testing.assert_close(conv_2ch(image_2ch), conv_1ch(image_1ch), rtol=1e-5, atol=1e-6)
        # ...and therefore every encoder output (norms, nonlinearities and later stages are copied as they are)
        for skip_2ch, skip_1ch in zip(target.encoder(image_2ch), pretrained_net.encoder(image_1ch), strict=True):
            torch.testing.assert_close(skip_2ch, skip_1ch, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("pretrained_channels", "channels"), [(2, 1), (2, 4)])
def test_other_channel_counts_still_fail_clearly(pretrained_channels, channels):
    target = make_net("plain", num_classes=3, seed=0, channels=channels)
    before = snapshot(target)
    pretrained = snapshot(make_net("plain", num_classes=1, seed=1, channels=pretrained_channels))
    with pytest.raises(NnsslError) as err:
        transfer_weights(target, pretrained)
    message = str(err.value)
    key = IN_PROJ_WEIGHT["plain"]
    assert message.startswith("checkpoint incompatible with the dataset's network: ")
    assert (
        f"{key} checkpoint (8,{pretrained_channels},3,3,3) vs network (8,{channels},3,3,3) (input channels "
        f"{pretrained_channels} -> {channels}: only a 1-channel input projection is adapted)"
    ) in message
    assert "\n" not in message
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


def test_only_the_in_proj_may_change_channels():
    target = make_net("plain", num_classes=3, seed=0, channels=2)
    pretrained = snapshot(make_net("plain", num_classes=1, seed=1))
    # the checkpoint names no input projection: the channel change is a plain mismatch
    with pytest.raises(NnsslError, match=r"conv\.weight checkpoint \(8,1,3,3,3\) vs network \(8,2,3,3,3\);"):
        transfer_weights(target, pretrained, in_proj_keys=())
    # a checkpoint listing the key (module names, as in its keys_to_in_proj) is adapted
    report = transfer_weights(target, pretrained, in_proj_keys=["encoder.stages.0.0.convs.0.all_modules.0"])
    assert report.adapted == [(IN_PROJ_WEIGHT["plain"], 1, 2)]
    # another tensor with an input-channel-like change is never adapted
    wrong = dict(pretrained)
    wrong["encoder.stages.1.0.convs.0.conv.weight"] = wrong["encoder.stages.1.0.convs.0.conv.weight"][:, :1]
    with pytest.raises(NnsslError, match=r"stages\.1\.0\.convs\.0\.conv\.weight checkpoint \(16,1,3,3,3\) vs net"):
        transfer_weights(target, wrong)


def test_checkpoint_in_proj_keys_reads_the_adaptation_plan_then_the_metadata():
    keys = ["encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"]
    assert checkpoint_in_proj_keys({"nnssl_adaptation_plan": {"keys_to_in_proj": keys}}) == keys
    assert checkpoint_in_proj_keys({"nnssl_metadata": {"keys_to_in_proj": keys[:1]}}) == keys[:1]
    assert checkpoint_in_proj_keys({"network_weights": {}}) is None
