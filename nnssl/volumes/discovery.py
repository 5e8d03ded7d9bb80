"""Finds unlabeled 3D images in a folder tree and groups them into cases, reading headers only.

Naming: nnU-Net's ``CASE_XXXX.ext`` (channel XXXX) or plain ``NAME.ext`` (one channel). Besides image
files, a case can be a Zarr / OME-Zarr folder (``NAME.zarr``, ``NAME.ome.zarr``) or a folder of 2D TIFF
planes (a folder holding at least two TIFF files, the first of them 2D; named like a file without
ending). TIFF, plane-folder and plain-Zarr spacing comes from a sidecar ``CASE.json`` / ``NAME.json``
(``{"spacing": [z, y, x]}``), else ``--spacing``, else (1, 1, 1) with a warning naming the file; OME-Zarr
carries its own. Everything here is cheap: no torch, no nnU-Net, no voxel data.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from nnssl.errors import NnsslError

logger = logging.getLogger(__name__)

SUPPORTED_ENDINGS = (".nii.gz", ".nii", ".mha", ".nrrd", ".tif", ".tiff")
TIFF_ENDINGS = (".tif", ".tiff")
ZARR_ENDINGS = (".ome.zarr", ".zarr")
PLANES = ""  # the "ending" of a folder of 2D TIFF planes
LAZY_ENDINGS = (*TIFF_ENDINGS, *ZARR_ENDINGS, PLANES)  # read region by region (nnssl.volumes.lazy)
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_DIGITS = re.compile(r"(\d+)")


@dataclass
class UnlabeledCase:
    """One case: its channel files (channel order) and, for TIFF, the spacing (z, y, x)."""

    identifier: str
    image_files: list[str]
    file_ending: str
    tiff_spacing: list[float] | None = field(default=None)  # spacing for formats without one in the header
    target_spacing: list[float] | None = field(default=None)  # picks an OME-Zarr level once plans are known


def file_ending(path: str) -> str | None:
    lower = path.lower().rstrip("/")
    if os.path.isdir(path):
        if lower.endswith(ZARR_ENDINGS):
            return next(e for e in ZARR_ENDINGS if lower.endswith(e))
        return PLANES if is_plane_folder(path) else None
    return next((e for e in SUPPORTED_ENDINGS if lower.endswith(e)), None)


def natural_key(name: str) -> list:
    """``z2.tif`` before ``z10.tif``."""
    return [int(part) if part.isdigit() else part for part in _DIGITS.split(name)]


def plane_files(folder: str) -> list[str]:
    """The TIFF planes of a plane folder, in natural order."""
    names = [n for n in os.listdir(folder) if n.lower().endswith(TIFF_ENDINGS) and not n.startswith(".")]
    return [os.path.join(folder, n) for n in sorted(names, key=natural_key)]


def is_plane_folder(folder: str) -> bool:
    """At least two TIFF files directly inside, the first (natural order) being 2D."""
    files = plane_files(folder)
    if len(files) < 2:
        return False
    import tifffile

    try:
        with tifffile.TiffFile(files[0]) as tif:
            return len([s for s in tif.series[0].shape if s > 1]) == 2
    except Exception:
        return False  # unreadable: reported as a file of its own


def _split_name(path: str, ending: str) -> tuple[str, int, bool]:
    """file name -> (case name, channel, nnU-Net naming?)"""
    name = os.path.basename(path.rstrip("/"))
    stem = name[: len(name) - len(ending)]
    match = _CHANNEL_SUFFIX.match(stem)
    if match:
        return match.group("case"), int(match.group("channel")), True
    return stem, 0, False


def _scan(folder: str) -> list[str]:
    """Image files, Zarr folders and plane folders under ``folder`` (which may itself be one)."""
    if file_ending(folder) is not None:
        return [folder]
    files = []
    for root, dirs, names in os.walk(folder):
        volume_dirs = [d for d in dirs if not d.startswith(".") and file_ending(os.path.join(root, d)) is not None]
        files.extend(os.path.join(root, d) for d in sorted(volume_dirs))
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in volume_dirs)
        files.extend(os.path.join(root, n) for n in sorted(names)
                     if not n.startswith(".") and file_ending(os.path.join(root, n)))
    return sorted(files)


def _group(folder: str, files: list[str]) -> dict[str, dict[int, str]]:
    cases: dict[str, dict[int, str]] = {}
    for path in files:
        ending = file_ending(path)
        name, channel, _ = _split_name(path, ending)
        rel_dir = "." if path == folder else os.path.relpath(os.path.dirname(path), folder)
        identifier = name if rel_dir == "." else rel_dir.replace(os.sep, "__") + "__" + name
        channels = cases.setdefault(identifier, {})
        if channel in channels:
            raise NnsslError(
                f"{path}: same case and channel as {channels[channel]}; rename one of them "
                f"(nnU-Net naming CASE_0000.ext, or plain NAME.ext)"
            )
        channels[channel] = path
    return cases


def _sidecar_spacing(case_files: list[str], ending: str) -> list[float] | None:
    first = case_files[0]
    name, _, _ = _split_name(first, ending)
    sidecar = os.path.join(os.path.dirname(first), name + ".json")
    if not os.path.isfile(sidecar):
        return None
    try:
        with open(sidecar) as f:
            spacing = json.load(f)["spacing"]
        spacing = [float(s) for s in spacing]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise NnsslError(f"{sidecar}: unreadable spacing sidecar ({e}); write {{\"spacing\": [z, y, x]}}") from e
    if len(spacing) != 3 or min(spacing) <= 0:
        raise NnsslError(f"{sidecar}: spacing must be 3 positive numbers [z, y, x], got {spacing}")
    return spacing


def discover_cases(
    folders: Sequence[str], spacing: Sequence[float] | None = None, expected_channels: int | None = None
) -> list[UnlabeledCase]:
    """All cases under ``folders`` (recursive), validated for naming and channel counts."""
    cases: list[UnlabeledCase] = []
    for folder in folders:
        if not os.path.isdir(folder):
            raise NnsslError(f"{folder}: no such folder; pass a folder of unlabeled 3D images with -i")
        files = _scan(folder)
        if not files:
            raise NnsslError(
                f"{folder}: no supported image found ({', '.join(SUPPORTED_ENDINGS)}); "
                f"check the folder or convert the images"
            )
        for identifier, channels in sorted(_group(folder, files).items()):
            cases.append(_make_case(identifier, channels, spacing))
    _check_unique_identifiers(cases)
    _check_channel_counts(cases, expected_channels)
    return cases


def _make_case(identifier: str, channels: dict[int, str], spacing: Sequence[float] | None) -> UnlabeledCase:
    ordered = [channels[c] for c in sorted(channels)]
    if sorted(channels) != list(range(len(channels))):
        found = ", ".join(f"{c:04d}" for c in sorted(channels))
        raise NnsslError(
            f"{ordered[0]}: case '{identifier}' has channels {found}; channels must be numbered "
            f"0000..{len(channels) - 1:04d} without gaps"
        )
    endings = {file_ending(f) for f in ordered}
    if len(endings) > 1:
        raise NnsslError(f"{ordered[0]}: case '{identifier}' mixes file types {sorted(endings)}; use one type")
    ending = endings.pop()
    case = UnlabeledCase(identifier, ordered, ending)
    if ending in LAZY_ENDINGS:
        case.tiff_spacing = _sidecar_spacing(ordered, ending) or (list(map(float, spacing)) if spacing else None)
        if case.tiff_spacing is None and ending not in ZARR_ENDINGS:  # OME-Zarr carries its spacing
            logger.warning("%s: image without spacing (no sidecar .json, no --spacing); assuming 1 1 1", ordered[0])
            case.tiff_spacing = [1.0, 1.0, 1.0]
    return case


def channel_count(case: UnlabeledCase) -> int:
    """Channels of a case: one per file, or the channel axis of a Zarr image."""
    if case.file_ending not in ZARR_ENDINGS:
        return len(case.image_files)
    from nnssl.volumes.ome_zarr import open_image

    images = [open_image(f) for f in case.image_files]
    return sum(image.array.shape[0] if image.channel_axis else 1 for image in images)


def _check_unique_identifiers(cases: list[UnlabeledCase]) -> None:
    seen: dict[str, str] = {}
    for case in cases:
        if case.identifier in seen:
            raise NnsslError(
                f"{case.image_files[0]}: case name '{case.identifier}' also used by {seen[case.identifier]}; "
                f"rename one of them"
            )
        seen[case.identifier] = case.image_files[0]


def _check_channel_counts(cases: list[UnlabeledCase], expected: int | None) -> None:
    channels = {c.identifier: channel_count(c) for c in cases}
    counts = set(channels.values())
    if len(counts) > 1:
        by_count = {n: next(c for c in cases if channels[c.identifier] == n) for n in sorted(counts)}
        examples = "; ".join(f"{c.identifier} has {n}" for n, c in by_count.items())
        raise NnsslError(
            f"{by_count[max(counts)].image_files[0]}: cases have differing channel counts ({examples}); "
            f"give every case the same channels"
        )
    if expected is not None and counts and counts != {expected}:
        case = cases[0]
        raise NnsslError(
            f"{case.image_files[0]}: {channels[case.identifier]} channel(s) per case but the dataset has {expected}; "
            f"name the channels CASE_0000 .. CASE_{expected - 1:04d}"
        )
