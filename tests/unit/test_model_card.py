"""The model card is written from a run's records: counts of distinct parameters, images, hardware and time,
and what a run did not record is said to be missing."""

from __future__ import annotations

import copy

from nnssl.checkpoints.adaptation_plan import adaptation_plan_from_metadata
from nnssl.checkpoints.model_card import CardOptions, PretrainingRun, model_card, tags_for, unique_parameters
from tests.tiny_networks import tiny_unet
from tests.unit.test_adaptation_plan import _metadata


def make_run(**run_file) -> PretrainingRun:
    network = tiny_unet("PlainConvUNet")
    meta = {**_metadata(), "nnssl_version": "0.1.0", "method": "mae", "method_settings": {"mask_ratio": 0.75},
            "global_batch_size": 8, "world_size": 4,
            "foreground_intensity_properties_per_channel": {"0": {"mean": 10.0, "std": 2.0, "percentile_00_5": 1.0,
                                                                  "percentile_99_5": 20.0}}}
    checkpoint = {"network_weights": network.state_dict(), "nnssl_metadata": meta,
                  "nnssl_adaptation_plan": adaptation_plan_from_metadata(meta),
                  "logging": {"train_losses": [0.5, 0.25], "val_losses": [0.6, 0.3], "epoch_times": [3600.0, 1800.0]}}
    run = {"settings": {"epochs": 2, "iterations_per_epoch": 250, "initial_lr": 0.01, "weight_decay": 3e-5,
                        "grad_clip": 12.0, "seed": 1, "val_fraction": 0.1}, **run_file}
    return PretrainingRun("brains-mae", checkpoint, run, {"channel_names": {"0": "autofluorescence"}})


def test_distinct_parameters_count_aliases_once():
    network = tiny_unet("PlainConvUNet")
    weights = network.state_dict()
    assert any(k.startswith("decoder.encoder.") for k in weights)  # the encoder is listed twice
    assert unique_parameters(weights) == sum(p.numel() for p in network.parameters())
    encoder = sum(p.numel() for p in network.encoder.parameters())
    assert unique_parameters(weights, ("encoder.stages",)) == encoder


def test_card_from_records_with_gpus_and_many_images():
    cases = [{"identifier": f"brain_{i}", "format": ".ome.zarr", "channels": 1, "shape": [1000, 2000, 2000 + i]}
             for i in range(3)]
    sessions = [{"started": "2026-01-01T00:00:00+00:00", "device": "cuda", "device_name": "NVIDIA H100",
                 "processes": 4, "cpu": "EPYC", "cpu_count": 64, "torch": "2.9.0"}]
    card = model_card(make_run(data={"cases": cases}, sessions=sessions, progress={"val_over_trivial": 0.5}),
                      CardOptions(license="cc-by-4.0", tags=["mouse-brain"]))
    assert card.startswith("---\nlicense: cc-by-4.0\n") and "- mae\n- mouse-brain\n---" in card
    assert "light-sheet-microscopy" not in card  # the channel is not named LSM
    for fact in ("| images | 3 volumes |", "12,006,000,000 (12 billion) per channel",
                 "| shapes | 1000 x 2000 x 2000 to 1000 x 2000 x 2002 voxels (z, y, x) |", "| formats | OME-Zarr (3) |",
                 "| names | not listed", "2 epochs x 250 iterations = 500 steps, global batch 8 patches",
                 "4 x NVIDIA H100 (cuda), CPU (EPYC, 64 cores), torch 2.9.0",
                 "1:30:00 for 2 epochs (2700.0 s per epoch", "| final val / trivial | 0.500",
                 "validation 0.3000", "channel 0: mean 10, std 2", "ptPlans__brains-mae____Spacing__2.00_1.00_1.00"):
        assert fact in card, fact
    assert card.endswith("```\n")


def test_what_a_run_did_not_record_is_said_to_be_missing():
    run = make_run()
    card = model_card(run, CardOptions(license="mit"))
    assert "| images | not recorded by this run" in card and "| sessions | not recorded by this run" in card
    assert "| hardware | 4 x ? (no details recorded) |" in card and "not measured for this method" in card
    assert "<org>/<repo>" in card and "## Figures" not in card  # no figures exported
    lsm = copy.copy(run)
    lsm.dataset_json = {"channel_names": {"0": "LSM"}}
    assert tags_for(lsm) == ["nnssl", "nnu-net", "self-supervised", "3d", "light-sheet-microscopy", "mae"]
