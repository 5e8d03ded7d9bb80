"""Finds unlabeled 3D images in a folder tree and groups them into cases, reading headers only.

Naming: nnU-Net's ``CASE_XXXX.ext`` (channel XXXX) or plain ``NAME.ext`` (one channel). TIFF spacing
comes from a sidecar ``CASE.json`` / ``NAME.json`` (``{"spacing": [z, y, x]}``), else ``--spacing``,
else (1, 1, 1) with a warning naming the file. Everything here is cheap: no torch, no nnU-Net.
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
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass
class UnlabeledCase:
    """One case: its channel files (channel order) and, for TIFF, the spacing (z, y, x)."""

    identifier: str
    image_files: list[str]
    file_ending: str
    tiff_spacing: list[float] | None = field(default=None)


def file_ending(path: str) -> str | None:
    lower = path.lower()
    return next((e for e in SUPPORTED_ENDINGS if lower.endswith(e)), None)


def _split_name(path: str, ending: str) -> tuple[str, int, bool]:
    """file name -> (case name, channel, nnU-Net naming?)"""
    stem = os.path.basename(path)[: -len(ending)]
    match = _CHANNEL_SUFFIX.match(stem)
    if match:
        return match.group("case"), int(match.group("channel")), True
    return stem, 0, False


def _scan(folder: str) -> list[str]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(os.path.join(root, n) for n in sorted(names) if not n.startswith(".") and file_ending(n))
    return files


def _group(folder: str, files: list[str]) -> dict[str, dict[int, str]]:
    cases: dict[str, dict[int, str]] = {}
    for path in files:
        ending = file_ending(path)
        name, channel, _ = _split_name(path, ending)
        rel_dir = os.path.relpath(os.path.dirname(path), folder)
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
    if ending in TIFF_ENDINGS:
        case.tiff_spacing = _sidecar_spacing(ordered, ending) or (list(map(float, spacing)) if spacing else None)
        if case.tiff_spacing is None:
            logger.warning("%s: TIFF without spacing (no sidecar .json, no --spacing); assuming 1 1 1", ordered[0])
            case.tiff_spacing = [1.0, 1.0, 1.0]
    return case


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
    counts = {len(c.image_files) for c in cases}
    if len(counts) > 1:
        by_count = {n: next(c for c in cases if len(c.image_files) == n) for n in sorted(counts)}
        examples = "; ".join(f"{c.identifier} has {n}" for n, c in by_count.items())
        raise NnsslError(
            f"{by_count[max(counts)].image_files[0]}: cases have differing channel counts ({examples}); "
            f"give every case the same channels"
        )
    if expected is not None and counts and counts != {expected}:
        case = cases[0]
        raise NnsslError(
            f"{case.image_files[0]}: {len(case.image_files)} channel(s) per case but the dataset has {expected}; "
            f"name the channels CASE_0000 .. CASE_{expected - 1:04d}"
        )
