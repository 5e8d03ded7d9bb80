"""The nnU-Net SSL ecosystem's ``nnssl_adaptation_plan``: nnssl writes it field for field and reads
checkpoints that carry only it (hand-written here: PlainConvUNet and ResidualEncoderUNet)."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from nnssl.checkpoints.adaptation_plan import (
    ADAPTATION_PLAN_FIELDS,
    ARCHITECTURE_PLAN_FIELDS,
    RESENC_L_PRESET,
    adaptation_plan_from_metadata,
    architecture_from_adaptation_plan,
    facts_from_adaptation_plan,
    rename_key,
)
from nnssl.checkpoints.files import load_checkpoint
from nnssl.errors import NnsslError
from nnssl.nnunet_adapter.plan_like_pretrained import read_pretraining_facts
from nnssl.nnunet_adapter.plans_and_networks import build_network
from nnssl.trainers.weight_transfer import checkpoint_weights_for, transfer_weights
from tests.ecosystem_checkpoints import (
    ARCHITECTURES,
    KEYS,
    OPENMIND_BLOCKS,
    OPENMIND_KEYS,
    openmind_resenc_checkpoint,
    save_ecosystem_checkpoint,
)
from tests.ecosystem_checkpoints import build_network as build_dna

UNET = "dynamic_network_architectures.architectures.unet."
FILE = "/models/ckpt.pth"


def _metadata() -> dict:
    """nnssl_metadata as nnssl's pretrainer writes it (2d listed first, 3d_lowres inheriting)."""
    architecture = {"network_class_name": UNET + "PlainConvUNet", "arch_kwargs": ARCHITECTURES["PlainConvUNet"],
                    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}
    plans = {
        "dataset_name": "Dataset501_X", "plans_name": "nnUNetPlans", "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2], "original_median_spacing_after_transp": [2.0, 1.0, 1.0],
        "configurations": {
            "2d": {"patch_size": [64, 64], "spacing": [1.0, 1.0], "architecture": {}},
            "3d_fullres": {"patch_size": [32, 64, 64], "spacing": [2.0, 1.0, 1.0], "batch_size": 2,
                           "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
                           "architecture": architecture},
            "3d_tiny": {"inherits_from": "3d_fullres", "patch_size": [16, 32, 32]},
        },
    }
    return {"plans": plans, "configuration": "3d_tiny", "architecture": architecture, "num_input_channels": 1,
            "patch_size": [16, 32, 32], "spacing": [2.0, 1.0, 1.0], "transpose_forward": [0, 1, 2],
            "transpose_backward": [0, 1, 2], "normalization_schemes": ["ZScoreNormalization"],
            "use_mask_for_norm": [False], "key_to_encoder": "encoder.stages", "key_to_stem": "encoder.stages.0",
            "keys_to_in_proj": ["encoder.stages.0.0.convs.0.conv"]}


def test_written_plan_has_the_published_fields_and_reads_back():
    meta = _metadata()
    plan = adaptation_plan_from_metadata(meta)
    assert tuple(plan) == ADAPTATION_PLAN_FIELDS
    assert tuple(plan["architecture_plans"]) == ARCHITECTURE_PLAN_FIELDS
    assert plan["architecture_plans"]["arch_class_name"] == "PlainConvUNet"
    assert plan["key_to_lpe"] is None and plan["recommended_downstream_patchsize"] == [16, 32, 32]
    # one configuration, resolved: the ecosystem's readers take the first one
    configurations = plan["pretrain_plan"]["configurations"]
    assert list(configurations) == ["3d_tiny"]
    assert configurations["3d_tiny"]["spacing"] == [2.0, 1.0, 1.0]
    assert configurations["3d_tiny"]["patch_size"] == [16, 32, 32]
    assert "inherits_from" not in configurations["3d_tiny"] and configurations["3d_tiny"]["batch_size"] == 2
    assert meta["plans"]["configurations"]["3d_tiny"]["inherits_from"] == "3d_fullres"  # input untouched
    facts = facts_from_adaptation_plan(plan, FILE)
    assert facts["architecture"] == meta["architecture"]
    for key in ("spacing", "transpose_forward", "normalization_schemes", "use_mask_for_norm", "num_input_channels"):
        assert facts[key] == meta[key]
    assert facts["recommended_patch_size"] == [16, 32, 32]
    buffer = io.BytesIO()
    torch.save({"plan": plan}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["plan"] == plan  # loadable like every checkpoint


@pytest.mark.parametrize("arch", ["PlainConvUNet", "ResidualEncoderUNet"])
def test_ecosystem_checkpoint_facts_and_transfer(arch, tmp_path):
    path = str(tmp_path / "checkpoint_final.pth")
    written = save_ecosystem_checkpoint(path, arch, spacing=[1.0, 0.5, 0.5])
    checkpoint = load_checkpoint(path)
    assert "nnssl_metadata" not in checkpoint
    facts = read_pretraining_facts(checkpoint, path)
    assert facts.architecture["network_class_name"] == UNET + arch
    assert facts.architecture["arch_kwargs"] == ARCHITECTURES[arch]
    assert facts.spacing == [1.0, 0.5, 0.5] and facts.total_stride == [4, 4, 4]
    assert facts.transpose_forward == [0, 1, 2] and facts.num_input_channels == 1
    assert facts.normalization_schemes == ["ZScoreNormalization"] and facts.use_mask_for_norm == [False]
    assert facts.recommended_patch_size == [16, 32, 32]

    plans = {"configurations": {"3d_fullres": {"patch_size": [16, 32, 32], "architecture": facts.architecture}}}
    torch.manual_seed(1)
    network = build_network(plans, "3d_fullres", 2, 3)  # 2-channel dataset, 3 classes
    key_to_encoder, key_to_stem, in_proj = KEYS[arch]
    assert (network.key_to_encoder, network.key_to_stem) == (key_to_encoder, key_to_stem)
    weights, in_proj_keys = checkpoint_weights_for(network, checkpoint)
    assert in_proj_keys == in_proj
    report = transfer_weights(network, weights, "encoder", in_proj_keys=in_proj_keys)
    parts = report.loaded_by_part()
    assert set(parts) == {"stem", "encoder"}
    assert all(k.startswith(key_to_stem + ".") for k in parts["stem"])
    assert all(k.startswith(key_to_encoder + ".") and not k.startswith(key_to_stem + ".") for k in parts["encoder"])
    text = report.format()
    assert f"loaded stem ({key_to_stem}): {len(parts['stem'])} tensors" in text
    assert f"loaded encoder ({key_to_encoder}): {len(parts['encoder'])} tensors" in text
    assert "adapted input projection" in text  # 1 -> 2 channels
    state = network.state_dict()
    for key in parts["encoder"]:
        assert torch.equal(state[key], written["network_weights"][key])


def test_openmind_resenc_layout_transfers_every_stem_and_encoder_tensor(tmp_path):
    """Whole-float spacing written as ints, tuples for kernel sizes and keys_to_in_proj, 6 ResEnc-L stages."""
    path = str(tmp_path / "checkpoint_final.pth")
    torch.save(openmind_resenc_checkpoint(), path)
    checkpoint = load_checkpoint(path)
    facts = read_pretraining_facts(checkpoint, path)
    assert facts.spacing == [1.0, 1.0, 1.0] and facts.total_stride == [32, 32, 32]
    assert facts.architecture["arch_kwargs"]["n_blocks_per_stage"] == OPENMIND_BLOCKS
    plans = {"configurations": {"3d_fullres": {"patch_size": [64, 64, 64], "architecture": facts.architecture}}}
    network = build_network(plans, "3d_fullres", 1, 2)
    weights, in_proj = checkpoint_weights_for(network, checkpoint)
    report = transfer_weights(network, weights, "encoder", in_proj_keys=in_proj)
    state, saved = network.state_dict(), checkpoint["network_weights"]
    encoder, stem, _ = OPENMIND_KEYS
    transferred = [k for k in saved if k.startswith((encoder + ".", stem + "."))]
    assert all(torch.equal(state[k], saved[k]) for k in transferred) and len(transferred) > 100
    assert set(report.loaded_by_part()) == {"stem", "encoder"} and not report.adapted


def test_other_key_prefixes_are_renamed_to_the_network(tmp_path):
    """An encoder saved on its own (keys 'stages.*', 'stem.*') lands in the UNet's encoder."""
    checkpoint = save_ecosystem_checkpoint(str(tmp_path / "c.pth"), "ResidualEncoderUNet")
    checkpoint["network_weights"] = {k[len("encoder."):]: v for k, v in checkpoint["network_weights"].items()
                                     if k.startswith("encoder.")}
    plan = checkpoint["nnssl_adaptation_plan"]
    plan.update(key_to_encoder="stages", key_to_stem="stem", keys_to_in_proj=["stem.convs.0.conv"])
    network = build_dna("ResidualEncoderUNet", seed=3)
    weights, in_proj = checkpoint_weights_for(network, checkpoint)
    assert in_proj == ["encoder.stem.convs.0.conv"] and "encoder.stem.convs.0.conv.weight" in weights
    report = transfer_weights(network, weights, "encoder", in_proj_keys=in_proj)
    assert set(report.loaded_by_part()) == {"stem", "encoder"}
    assert rename_key("stages.0.x", [("stem", "encoder.stem"), ("stages", "encoder.stages")]) == "encoder.stages.0.x"


def test_presets_and_dotted_names():
    plan = {"architecture_plans": {"arch_class_name": "ResEncL", "arch_kwargs": None}}
    assert architecture_from_adaptation_plan(plan, FILE) == RESENC_L_PRESET
    dotted = {"architecture_plans": {"arch_class_name": UNET + "PlainConvUNet",
                                     "arch_kwargs": ARCHITECTURES["PlainConvUNet"]}}
    architecture = architecture_from_adaptation_plan(dotted, FILE)
    assert architecture["network_class_name"] == UNET + "PlainConvUNet"
    assert architecture["_kw_requires_import"] == ["conv_op", "norm_op", "nonlin"]  # derived when absent


def _broken(tmp_path, change) -> tuple[dict, str]:
    path = str(tmp_path / "broken.pth")
    checkpoint = copy.deepcopy(save_ecosystem_checkpoint(path, "PlainConvUNet"))
    change(checkpoint)
    return checkpoint, path


@pytest.mark.parametrize("change, needle", [
    (lambda c: c.pop("nnssl_adaptation_plan"), "has neither 'nnssl_metadata' nor 'nnssl_adaptation_plan'"),
    (lambda c: c["nnssl_adaptation_plan"].pop("key_to_encoder"), "lacks key_to_encoder"),
    (lambda c: c["nnssl_adaptation_plan"]["architecture_plans"].update(arch_class_name="PrimusM", arch_kwargs=None),
     "'PrimusM' is a Primus (transformer) network, which nnssl does not build; fine-tune it with nnU-Net master's"),
    (lambda c: c["nnssl_adaptation_plan"]["architecture_plans"].update(arch_class_name="SwinUNETR"),
     "'SwinUNETR' is unknown"),
    (lambda c: c["nnssl_adaptation_plan"]["pretrain_plan"].update(configurations={}), "has no configurations"),
    (lambda c: c["nnssl_adaptation_plan"]["pretrain_plan"]["configurations"]["onemmiso"].update(spacing=[1, 1]),
     "is not 3 values"),
])
def test_incomplete_plans_are_one_line_errors(tmp_path, change, needle):
    checkpoint, path = _broken(tmp_path, change)
    with pytest.raises(NnsslError) as info:
        read_pretraining_facts(checkpoint, path)
    assert needle in str(info.value) and str(info.value).startswith(path) and "\n" not in str(info.value)


def test_absent_optional_fields_take_the_ecosystem_defaults(tmp_path):
    def strip(c: dict) -> None:
        plan = c["nnssl_adaptation_plan"]
        for key in ("keys_to_in_proj", "key_to_lpe", "recommended_downstream_patchsize"):
            plan.pop(key)
        plan["pretrain_plan"] = {"configurations": {"x": {"spacing": None, "patch_size": [16, 32, 32]}}}
    checkpoint, path = _broken(tmp_path, strip)
    facts = read_pretraining_facts(checkpoint, path)
    assert facts.spacing is None and facts.recommended_patch_size is None
    assert facts.transpose_forward == facts.transpose_backward == [0, 1, 2]
    assert facts.normalization_schemes == ["ZScoreNormalization"] and facts.use_mask_for_norm == [False]
