"""nnssl.evaluation's metrics on shapes whose answer is known by hand: cubes for overlap and instances, a
torus, balls and rings for Betti numbers, tubes for clDice."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nnssl.evaluation.instances import instance_metrics
from nnssl.evaluation.metrics import ALL_FAMILIES, FAMILIES, bounding_box, case_metrics, label_metrics
from nnssl.evaluation.overlap import overlap_metrics
from nnssl.evaluation.summary import format_table, nan_mean, summarize, write_summary
from nnssl.evaluation.topology import betti_errors, betti_numbers, cldice, skeleton


def box(shape, lo, hi) -> np.ndarray:
    """Boolean mask (Z, Y, X) of the box [lo, hi) (per axis)."""
    mask = np.zeros(shape, bool)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return mask


def torus(shape, center, radius, tube_radius, plane="xy") -> np.ndarray:
    """Solid torus around ``center`` (z, y, x), its ring in the xy or xz plane."""
    z, y, x = (g - c for g, c in zip(np.indices(shape, dtype=float), center))
    a, b, c = (x, y, z) if plane == "xy" else (x, z, y)
    return (radius - np.sqrt(a**2 + b**2)) ** 2 + c**2 <= tube_radius**2


def ball(shape, center, radius) -> np.ndarray:
    return sum((g - c) ** 2 for g, c in zip(np.indices(shape), center)) <= radius**2


def tube(shape, radius, centre_y, x0=2, x1=None) -> np.ndarray:
    """A straight tube along x through (z = middle, y = centre_y), from x0 to x1."""
    z, y, x = np.indices(shape)
    x1 = shape[2] - 2 if x1 is None else x1
    return ((z - shape[0] // 2) ** 2 + (y - centre_y) ** 2 <= radius**2) & (x >= x0) & (x < x1)


SHAPE = (20, 20, 24)
CUBE_A = box(SHAPE, (2, 2, 2), (8, 8, 8))  # 6^3 = 216 voxels
CUBE_B = box(SHAPE, (2, 2, 10), (8, 8, 16))  # the same, 2 voxels of background away along x


# ---------------------------------------------------------------------------------------------- overlap


def test_dice_of_a_cube_shifted_by_one_voxel():
    shifted = box(SHAPE, (2, 2, 3), (8, 8, 9))  # overlap 6 x 6 x 5 = 180
    m = overlap_metrics(shifted, CUBE_A)
    assert (m["TP"], m["FP"], m["FN"], m["n_pred"], m["n_ref"]) == (180, 36, 36, 216, 216)
    assert m["TN"] == 20 * 20 * 24 - 252
    assert m["Dice"] == pytest.approx(2 * 180 / 432) and m["IoU"] == pytest.approx(180 / 252)


def test_a_label_absent_from_both_masks_follows_nnunet():
    """nnU-Net: NaN Dice / IoU when the label is in neither mask (skipped in means); the same for the other
    ratios, and Betti errors 0."""
    empty = np.zeros(SHAPE, bool)
    m = label_metrics(empty, empty)
    for key in ("Dice", "IoU", "clDice", "F1", "PQ", "SQ"):
        assert math.isnan(m[key]), key
    assert m["TN"] == empty.size and m["TP"] == m["FP"] == m["FN"] == 0
    assert m["Betti0_error"] == m["Betti1_error"] == 0


@pytest.mark.parametrize("which", ["prediction", "reference"])
def test_a_label_in_one_mask_only_scores_zero(which):
    empty = np.zeros(SHAPE, bool)
    pred, ref = (CUBE_A, empty) if which == "prediction" else (empty, CUBE_A)
    m = label_metrics(pred, ref)
    assert m["Dice"] == m["clDice"] == m["F1"] == m["PQ"] == 0.0
    assert m["Betti0_error"] == 1


# --------------------------------------------------------------------------------------------- topology


@pytest.mark.parametrize(("name", "expected"), [
    ("torus", (1, 1, 0)),
    ("torus cut by the image border", (1, 1, 0)),
    ("ball", (1, 0, 0)),
    ("hollow sphere", (1, 0, 1)),
    ("two linked rings", (2, 2, 0)),
    ("two separate rings", (2, 2, 0)),
])
def test_betti_numbers_of_known_shapes(name, expected):
    shape = (24, 48, 48)
    masks = {
        "torus": lambda: torus(shape, (12, 24, 24), 10, 3),
        "torus cut by the image border": lambda: torus((5, 48, 48), (2, 24, 24), 10, 3),
        "ball": lambda: ball(shape, (12, 24, 24), 9),
        "hollow sphere": lambda: ball(shape, (12, 24, 24), 10) & ~ball(shape, (12, 24, 24), 6),
        # a chain's two links: the xz ring passes through the hole of the xy ring without touching it
        "two linked rings": lambda: torus(shape, (12, 24, 16), 8, 2) | torus(shape, (12, 24, 24), 8, 2, "xz"),
        "two separate rings": lambda: torus(shape, (12, 12, 12), 8, 2) | torus(shape, (12, 36, 36), 8, 2, "xz"),
    }
    assert betti_numbers(masks[name]()) == expected


def test_two_touching_blobs_against_two_separate_ones_is_one_betti0_error():
    merged = CUBE_A | CUBE_B | box(SHAPE, (4, 4, 8), (6, 6, 10))  # a bridge joins the cubes
    assert betti_errors(merged, CUBE_A | CUBE_B) == {"Betti0_error": 1, "Betti1_error": 0, "b0_pred": 1,
                                                     "b0_ref": 2, "b1_pred": 0, "b1_ref": 0}


def test_a_ring_closed_by_mistake_is_one_betti1_error():
    shape = (12, 40, 40)
    ring = torus(shape, (6, 20, 20), 12, 3)
    open_ring = ring & ~box(shape, (0, 17, 0), (12, 23, 12))  # a gap cut through the ring
    assert betti_numbers(open_ring)[:2] == (1, 0)
    assert betti_errors(ring, open_ring)["Betti1_error"] == 1


TUBE_SHAPE = (16, 16, 44)
TUBE = tube(TUBE_SHAPE, 3, centre_y=8)  # radius 3, length 40


def test_a_tube_shifted_by_one_voxel_keeps_cldice_near_one():
    shifted = tube(TUBE_SHAPE, 3, centre_y=9)
    assert cldice(shifted, TUBE) >= 0.95
    assert overlap_metrics(shifted, TUBE)["Dice"] < 0.8  # while Dice drops: 0.759 for radius 3


def test_a_broken_tube_has_lower_cldice():
    broken = TUBE & ~box(TUBE_SHAPE, (0, 0, 18), (*TUBE_SHAPE[:2], 26))  # 8 of 40 voxels missing
    shifted = tube(TUBE_SHAPE, 3, centre_y=9)
    assert cldice(broken, TUBE) < 0.9 < cldice(shifted, TUBE)
    assert cldice(TUBE, TUBE) == 1.0


def test_every_component_keeps_a_skeleton():
    """scikit-image's thinning deletes objects of even, symmetric thickness; ``skeleton`` gives them one: a
    centreline for a 4 x 4 line, a voxel or two for small cubes."""
    line = box((12, 12, 30), (2, 2, 2), (6, 6, 28))
    cubes = box(SHAPE, (2, 2, 2), (4, 4, 4)) | box(SHAPE, (10, 10, 10), (14, 14, 14))
    thin_line = skeleton(line)
    assert 20 <= np.count_nonzero(thin_line) <= 26 and not (thin_line & ~line).any()
    thin_cubes = skeleton(cubes)
    assert thin_cubes[2:4, 2:4, 2:4].any() and thin_cubes[10:14, 10:14, 10:14].any()
    assert np.count_nonzero(thin_cubes) <= 4 and not (thin_cubes & ~cubes).any()
    assert cldice(cubes, cubes) == 1.0


# -------------------------------------------------------------------------------------------- instances


def test_instances_of_a_perfect_prediction():
    m = instance_metrics(CUBE_A | CUBE_B, CUBE_A | CUBE_B)
    assert m["F1"] == m["PQ"] == m["SQ"] == 1.0
    assert (m["instance_TP"], m["n_instances_pred"], m["n_instances_ref"]) == (2, 2, 2)


def test_instances_of_a_shifted_copy_score_the_iou():
    shift = lambda m: np.roll(m, 1, axis=2)  # noqa: E731
    m = instance_metrics(shift(CUBE_A) | shift(CUBE_B), CUBE_A | CUBE_B)
    assert m["F1"] == 1.0
    assert m["SQ"] == pytest.approx(180 / 252) and m["PQ"] == pytest.approx(180 / 252)  # IoU 5/7 per cube


def test_two_separate_blobs_predicted_as_one_merged_blob():
    """The merged box (6 x 6 x 14 = 504 voxels) overlaps each 216-voxel cube with IoU 216 / 504 = 3/7: a match
    at panoptica's threshold 0.3 (at 0.5 there would be none); one-to-one, so the other cube is missed.
    TP 1, FP 0, FN 1: F1 = 2 / (2 + 1) = 2/3, SQ = 3/7, PQ = 2/7."""
    merged = box(SHAPE, (2, 2, 2), (8, 8, 16))
    m = instance_metrics(merged, CUBE_A | CUBE_B)
    assert (m["instance_TP"], m["instance_FP"], m["instance_FN"]) == (1, 0, 1)
    assert m["F1"] == pytest.approx(2 / 3)
    assert m["SQ"] == pytest.approx(3 / 7) and m["PQ"] == pytest.approx(2 / 7)


def test_a_prediction_below_the_match_threshold_is_no_match():
    """A 6^3 cube against a box four times its size around it: IoU 0.25 < 0.3."""
    large = box(SHAPE, (2, 2, 2), (8, 14, 14))
    m = instance_metrics(CUBE_A, large)
    assert (m["instance_TP"], m["instance_FP"], m["instance_FN"]) == (0, 1, 1) and m["F1"] == 0.0


# ---------------------------------------------------------------------------------------- cases, summary


def test_case_metrics_per_label_and_family():
    ref = CUBE_A.astype(np.uint8) + 2 * CUBE_B
    pred = np.roll(ref, 1, axis=2)
    metrics = case_metrics(pred, ref, [1, 2])
    assert set(metrics) == {1, 2}
    expected_keys = [k for f in ALL_FAMILIES for k in FAMILIES[f][1]]
    assert list(metrics[1]) == expected_keys
    assert metrics[2]["Dice"] == pytest.approx(5 / 6) and metrics[2]["F1"] == 1.0
    assert list(case_metrics(pred, ref, [1], ["overlap"])[1]) == list(FAMILIES["overlap"][1])
    with pytest.raises(ValueError, match="shape mismatch"):
        case_metrics(pred[1:], ref, [1])


def test_bounding_box():
    assert bounding_box(CUBE_A | CUBE_B) == (slice(2, 8), slice(2, 8), slice(2, 16))
    assert bounding_box(np.zeros((3, 3, 3), bool)) == (slice(0, 0),) * 3


def test_the_command_line_names_every_metric_family():
    from nnssl.cli.evaluate import FAMILIES as CLI_FAMILIES

    assert tuple(CLI_FAMILIES) == ALL_FAMILIES


def _case(dice: float, f1: float) -> dict:
    return {"Dice": dice, "F1": f1}


def test_summary_means_skip_nan_like_nnunet(tmp_path):
    nan = float("nan")
    per_case = [
        {"prediction_file": "p/a.nii.gz", "reference_file": "r/a.nii.gz",
         "metrics": {"1": _case(0.5, nan), "2": _case(1.0, 0.5)}},
        {"prediction_file": "p/b.nii.gz", "reference_file": "r/b.nii.gz",
         "metrics": {"1": _case(1.0, nan), "2": _case(nan, 1.0)}},
    ]
    summary = summarize(per_case, [1, 2])
    assert summary["mean"]["1"]["Dice"] == 0.75 and math.isnan(summary["mean"]["1"]["F1"])
    assert summary["mean"]["2"] == {"Dice": 1.0, "F1": 0.75}
    assert summary["foreground_mean"] == {"Dice": 0.875, "F1": 0.75}
    assert nan_mean([nan, nan]) != nan_mean([nan, nan])  # NaN when nothing is left
    path = tmp_path / "summary.json"
    write_summary(summary, str(path))
    text = path.read_text()
    assert "NaN" in text and text.index('"foreground_mean"') < text.index('"mean"')  # nnU-Net's sorted keys
    assert json.loads(text)["metric_per_case"][1]["metrics"]["2"]["F1"] == 1.0
    table = format_table(summary, ["Dice", "F1"]).splitlines()
    assert table[0].split() == ["label", "Dice", "F1"] and table[1].split() == ["1", "0.7500", "nan"]
    assert table[-1].split() == ["mean", "0.8750", "0.7500"]
