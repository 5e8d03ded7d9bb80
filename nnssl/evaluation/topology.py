"""Topology of one label: clDice (centreline overlap) and Betti-number errors.

clDice (Shit et al., CVPR 2021): with S(.) the skeleton (scikit-image's ``skeletonize``, Lee's 3D thinning),
topology precision = |S(P) ∩ G| / |S(P)|, topology sensitivity = |S(G) ∩ P| / |S(G)|, clDice = their harmonic
mean. A prediction shifted by a voxel inside a thick tube keeps its skeleton inside the reference (clDice
near 1, Dice drops); a gap in a vessel removes reference skeleton from the prediction (clDice drops).

Betti numbers of a 3D mask: b0 = connected components (26-connected foreground, connected-components-3d),
b2 = cavities (background components, 6-connected, that do not reach the image border) and b1 = tunnels,
from the Euler characteristic χ = b0 - b1 + b2 (scikit-image's ``euler_number`` with connectivity 3, which
pairs 26-connected foreground with 6-connected background, as b0 and b2 do).

scikit-image's 3D thinning deletes some objects entirely (scikit-image issue #3757, open): cubes and lines
of even, symmetric thickness (a 4 x 4 x N line) and about one small blob in ten. ``skeleton`` gives every
component of the mask a skeleton: a second thinning with those components one voxel thicker in y and x, and
for what still vanishes, the component's deepest voxel (a blob thins to a point).
"""

from __future__ import annotations

import cc3d
import numpy as np
from scipy import ndimage
from skimage.measure import euler_number
from skimage.morphology import skeletonize

CLDICE_KEYS = ("clDice",)
BETTI_KEYS = ("Betti0_error", "Betti1_error", "b0_pred", "b0_ref", "b1_pred", "b1_ref")


def _component_skeleton(part: np.ndarray) -> np.ndarray:
    """Skeleton of one component (its bounding box) that ``skeletonize`` deleted entirely."""
    # one voxel thicker in y and x: no longer of even, symmetric thickness (stays inside the component)
    grown = np.pad(part, 1)
    grown[:, 1:, :] |= grown[:, :-1, :].copy()
    grown[:, :, 1:] |= grown[:, :, :-1].copy()
    thin = skeletonize(grown)[1:-1, 1:-1, 1:-1] & part
    if not thin.any():
        depth = ndimage.distance_transform_edt(np.pad(part, 1))[1:-1, 1:-1, 1:-1]
        thin[np.unravel_index(int(np.argmax(depth)), part.shape)] = True
    return thin


def skeleton(mask: np.ndarray) -> np.ndarray:
    """Skeleton of a boolean mask (Z, Y, X) with at least one voxel in each 26-connected component."""
    thin = skeletonize(mask)
    labels, count = cc3d.connected_components(mask, connectivity=26, return_N=True)
    lost = np.setdiff1d(np.arange(1, count + 1), labels[thin])
    if lost.size:
        boxes = cc3d.statistics(labels)["bounding_boxes"]
        for label in lost:
            box = boxes[label]
            thin[box] |= _component_skeleton(labels[box] == label)
    return thin


def cldice(pred: np.ndarray, ref: np.ndarray) -> float:
    """clDice of two boolean masks (Z, Y, X): NaN when both are empty (like nnU-Net's Dice), 0 when one is."""
    if not pred.any() and not ref.any():
        return float("nan")
    if not pred.any() or not ref.any():
        return 0.0
    pred_skeleton, ref_skeleton = skeleton(pred), skeleton(ref)  # never empty for a non-empty mask
    precision = np.count_nonzero(pred_skeleton & ref) / np.count_nonzero(pred_skeleton)
    sensitivity = np.count_nonzero(ref_skeleton & pred) / np.count_nonzero(ref_skeleton)
    if precision + sensitivity == 0:
        return 0.0
    return float(2 * precision * sensitivity / (precision + sensitivity))


def betti_numbers(mask: np.ndarray) -> tuple[int, int, int]:
    """(b0, b1, b2) of a boolean mask (Z, Y, X); everything outside the array counts as background."""
    if not mask.any():
        return 0, 0, 0
    b0 = int(cc3d.connected_components(mask, connectivity=26, return_N=True)[1])
    # one background shell around the array joins every background region that reaches the border into one
    background = np.pad(~mask, 1, constant_values=True)
    b2 = int(cc3d.connected_components(background, connectivity=6, return_N=True)[1]) - 1
    chi = int(euler_number(mask, connectivity=3))
    return b0, b0 + b2 - chi, b2


def betti_errors(pred: np.ndarray, ref: np.ndarray) -> dict[str, int]:
    """|b0(P) - b0(G)| and |b1(P) - b1(G)| of two boolean masks (Z, Y, X), with the Betti numbers themselves."""
    b0_pred, b1_pred, _ = betti_numbers(pred)
    b0_ref, b1_ref, _ = betti_numbers(ref)
    return {"Betti0_error": abs(b0_pred - b0_ref), "Betti1_error": abs(b1_pred - b1_ref),
            "b0_pred": b0_pred, "b0_ref": b0_ref, "b1_pred": b1_pred, "b1_ref": b1_ref}
