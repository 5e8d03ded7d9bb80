"""The model card (``README.md``) of an exported pretraining: Hugging Face's YAML header, then a body written
from the run's own records, never from constants: the checkpoint's ``nnssl_metadata``, ``logging`` and
weights, the run file (``nnssl_run.json``: settings, images, sessions, progress) and ``dataset.json``.
Facts a run did not record (runs made before nnssl recorded images and hardware) are said to be missing.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nnssl.checkpoints.adaptation_plan import ADAPTATION_PLAN_KEY, WEIGHTS_KEY
from nnssl.checkpoints.hub import ADAPTATION_PLAN_FILE, CONFIG_FILE, HUB_URL
from nnssl.checkpoints.layout import FINAL_CHECKPOINT, PROGRESS_FIGURE
from nnssl.nnunet_folders import name_part_from

if TYPE_CHECKING:
    import torch

PREVIEW_FILE = "reconstruction_preview.png"
BASE_TAGS = ("nnssl", "nnu-net", "self-supervised", "3d")
LIGHT_SHEET_TAG = "light-sheet-microscopy"
PLACEHOLDER_REPO = "<org>/<repo>"
FORMAT_NAMES = {".nii.gz": "NIfTI", ".nii": "NIfTI", ".mha": "MetaImage", ".nrrd": "NRRD", ".tif": "TIFF",
                ".tiff": "TIFF", ".zarr": "Zarr", ".ome.zarr": "OME-Zarr", "": "folder of 2D TIFF planes"}
NOT_RECORDED = "not recorded by this run (an nnssl_pretrain that did not record it yet)"


@dataclass
class PretrainingRun:
    """What the card is written from: the loaded final checkpoint, the run file, the run's dataset.json and
    which figures the export holds (``preview_epoch``: the epoch of the reconstruction preview, or None)."""

    name: str
    checkpoint: dict
    run: dict
    dataset_json: dict
    has_progress_figure: bool = False
    preview_epoch: int | None = None

    @property
    def meta(self) -> dict:
        return self.checkpoint["nnssl_metadata"]


@dataclass
class CardOptions:
    """``nnssl_export``'s choices: licence, repository (for the commands), whether to list the images' names,
    and tags beyond the ones the run implies."""

    license: str
    repo_id: str | None = None
    list_cases: bool = False
    tags: list[str] = field(default_factory=list)


def tags_for(run: PretrainingRun, extra: Sequence[str] = ()) -> list[str]:
    """nnssl's tags, the method, light-sheet microscopy when a channel is named so, then ``extra``."""
    channel_names = [str(n).lower() for n in run.dataset_json.get("channel_names", {}).values()]
    light_sheet = [LIGHT_SHEET_TAG] if any(n == "lsm" or "light" in n for n in channel_names) else []
    tags = [*BASE_TAGS, *light_sheet, run.meta["method"], *extra]
    return list(dict.fromkeys(tags))  # in order, once


def _yaml_header(run: PretrainingRun, options: CardOptions) -> list[str]:
    lines = ["---", f"license: {options.license}", "library_name: nnssl", "tags:"]
    lines += [f"- {tag}" for tag in tags_for(run, options.tags)]
    return [*lines, "---", ""]


def unique_parameters(weights: Mapping[str, torch.Tensor], prefixes: Sequence[str] = ()) -> int:
    """Elements of the distinct tensors of a state dict (aliases such as ``decoder.encoder.*`` share storage
    and count once); with ``prefixes``, only tensors one of whose keys lies under one of them."""
    from nnssl.checkpoints.files import tensor_identity  # torch: not for nnssl_export's argument checks

    found: dict[tuple, tuple[int, bool]] = {}
    for key, tensor in weights.items():
        identity, inside = tensor_identity(tensor), any(key == p or key.startswith(p + ".") for p in prefixes)
        numel, seen_inside = found.get(identity, (tensor.numel(), False))
        found[identity] = (numel, seen_inside or inside)
    return sum(numel for numel, inside in found.values() if inside or not prefixes)


def _axes(values: Sequence) -> str:
    return " x ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _table(rows: Sequence[tuple[str, str]]) -> list[str]:
    return ["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows), ""]


def _summary(run: PretrainingRun) -> list[str]:
    meta, cases = run.meta, run.run.get("data", {}).get("cases")
    architecture = meta["architecture"]["network_class_name"].rsplit(".", 1)[-1]
    images = f"{len(cases)} unlabeled 3D images" if cases is not None else "unlabeled 3D images"
    return [f"# {run.name}", "",
            f"Self-supervised pretraining (method {meta['method']}) of nnU-Net's {architecture} on {images} with "
            f"nnssl {meta['nnssl_version']}. The stem and encoder are meant to be fine-tuned "
            f"on a labelled dataset with nnU-Net: nnssl's `nnSSLTrainer` or nnU-Net master's `PretrainedTrainer`.",
            "", f"`{FINAL_CHECKPOINT}` holds `{WEIGHTS_KEY}` and `{ADAPTATION_PLAN_KEY}` only (CPU tensors; "
            f"`torch.load(f, weights_only=True)` loads it); `{ADAPTATION_PLAN_FILE}` is the same plan as JSON; "
            f"`{CONFIG_FILE}` names the format.", ""]


def _usage(run: PretrainingRun, options: CardOptions) -> list[str]:
    repo = options.repo_id or PLACEHOLDER_REPO
    # the plans name part (nnssl_plan_like_pretrained -n): the card's name in the letters a plans name allows
    url, name = HUB_URL + repo, name_part_from(run.name, "pretrained")
    spacing = "_".join(f"{s:.2f}" for s in run.meta["spacing"])
    return ["## Fine-tune it", "", "With nnU-Net 2.8 and nnssl (the download goes to "
            "`$nnssl_pretrained_models/" + repo.replace("/", "_") + "`; `HF_HUB_OFFLINE=1` uses what is there):",
            "", "```bash", "export nnssl_pretrained_models=/path/to/pretrained_models",
            "nnUNetv2_extract_fingerprint -d DATASET_ID",
            f"nnssl_plan_like_pretrained -d DATASET_ID --pretrained {url} -n {name}",
            f"nnUNetv2_preprocess -d DATASET_ID -plans_name nnsslPlans_{name} -c 3d_fullres",
            f"nnUNetv2_train DATASET_ID 3d_fullres 0 -tr nnSSLTrainer -p nnsslPlans_{name}", "```", "",
            "With nnU-Net's master branch (`nnUNetv2_preprocess_like_nnssl`, not in a release yet; one `Z` per "
            "channel of your dataset in the plans name):", "", "```bash",
            "export nnssl_pretrained_models=/path/to/pretrained_models",
            "nnUNetv2_extract_fingerprint -d DATASET_ID", "nnUNetv2_plan_experiment -d DATASET_ID",
            f"nnUNetv2_preprocess_like_nnssl -d DATASET_ID -n {name} -pc {url} -am like_pretrained",
            f"nnUNetv2_train_pretrained DATASET_ID 3d_fullres 0 -p ptPlans__{name}____Spacing__{spacing}___Norm__Z "
            f"-tr PretrainedTrainer", "```", ""]


def _method(run: PretrainingRun) -> list[str]:
    meta, settings = run.meta, run.run.get("settings", {})
    history = run.checkpoint.get("logging", {})
    epochs, iterations = settings.get("epochs"), settings.get("iterations_per_epoch")
    steps = f"{epochs} epochs x {iterations} iterations = {epochs * iterations} steps" if epochs and iterations else \
        NOT_RECORDED
    method_settings = ", ".join(f"{k} {v}" for k, v in meta.get("method_settings", {}).items()) or "defaults"
    progress = run.run.get("progress", {})
    ratio = progress.get("val_over_trivial")
    rows = [("method", f"{meta['method']} ({method_settings}); see nnssl's docs/methods.md"),
            ("steps", f"{steps}, global batch {meta.get('global_batch_size', '?')} patches"),
            ("optimizer", f"initial learning rate {settings.get('initial_lr')} with poly decay, weight decay "
                          f"{settings.get('weight_decay')}, gradient clipping {settings.get('grad_clip')}, seed "
                          f"{settings.get('seed')}"),
            ("held out for validation", f"a fraction {settings.get('val_fraction')} of the images"),
            ("final losses", f"train {_number(history.get('train_losses'))}, validation "
                             f"{_number(history.get('val_losses'))}"),
            ("final val / trivial", f"{ratio:.3f} (the validation loss over that of predicting each hidden voxel "
                                    f"as its patch's visible mean; below 1: it learned)" if ratio is not None
             else "not measured for this method")]
    return ["## Method and settings", "", *_table(rows)]


def _number(values: Sequence[float] | None) -> str:
    return f"{values[-1]:.4f}" if values else "not recorded"


def _network(run: PretrainingRun) -> list[str]:
    meta, kwargs = run.meta, run.meta["architecture"]["arch_kwargs"]
    weights = run.checkpoint[WEIGHTS_KEY]
    transferred = unique_parameters(weights, (meta["key_to_encoder"], meta["key_to_stem"]))
    blocks = kwargs.get("n_blocks_per_stage") or kwargs.get("n_conv_per_stage")
    rows = [("network", f"`{meta['architecture']['network_class_name']}`, {kwargs['n_stages']} stages"),
            ("features per stage", ", ".join(map(str, kwargs["features_per_stage"]))),
            ("blocks (convolutions) per stage", ", ".join(map(str, blocks or [])) or "not given"),
            ("strides", "; ".join(_axes(s) if isinstance(s, list) else str(s) for s in kwargs["strides"])),
            ("parameters", f"{unique_parameters(weights):,} in all, {transferred:,} in stem and encoder "
                           f"(`{meta['key_to_stem']}`, `{meta['key_to_encoder']}`: what fine-tuning transfers)"),
            ("input channels", str(meta["num_input_channels"])),
            ("patch", f"{_axes(meta['patch_size'])} voxels (the recommended downstream patch size)")]
    return ["## Network and patch", "", *_table(rows)]


def _intensities(meta: Mapping) -> str:
    stats = meta.get("foreground_intensity_properties_per_channel") or {}
    return "; ".join(f"channel {c}: mean {s['mean']:.4g}, std {s['std']:.4g}, 0.5-99.5 percentiles "
                     f"{s['percentile_00_5']:.4g}-{s['percentile_99_5']:.4g}" for c, s in stats.items()) or "none"


def _spacing(run: PretrainingRun) -> list[str]:
    meta = run.meta
    masks = ", ".join("yes" if m else "no" for m in meta["use_mask_for_norm"])
    rows = [("spacing", f"{_axes(meta['spacing'])} (the network's axis order; images are resampled to it)"),
            ("axis order", f"transpose_forward {meta['transpose_forward']} of the images' axes"),
            ("normalization", f"{', '.join(meta['normalization_schemes'])} (per channel; nonzero mask: {masks})"),
            ("intensity statistics", _intensities(meta))]
    return ["## Spacing and normalization", "", *_table(rows)]


def _shapes(shapes: list[list[int]]) -> str:
    low, high = [min(axis) for axis in zip(*shapes)], [max(axis) for axis in zip(*shapes)]
    return _axes(low) + ("" if low == high else f" to {_axes(high)}") + " voxels (z, y, x)"


def _data(run: PretrainingRun, options: CardOptions) -> list[str]:
    cases = run.run.get("data", {}).get("cases")
    channel_names = ", ".join(str(n) for n in run.dataset_json.get("channel_names", {}).values())
    if not cases:
        return ["## Unlabeled data", "", *_table([("images", NOT_RECORDED), ("channels", channel_names)])]
    voxels = sum(math.prod(c["shape"]) for c in cases)
    formats = Counter(FORMAT_NAMES.get(c["format"], c["format"]) for c in cases)
    names = ", ".join(c["identifier"] for c in cases) if options.list_cases else \
        "not listed (`nnssl_export --list-cases` lists them)"
    rows = [("images", f"{len(cases)} volumes"),
            ("voxels", f"{_count(voxels)} per channel, {_count(voxels // len(cases))} per image on average"),
            ("shapes", _shapes([c["shape"] for c in cases])),
            ("formats", ", ".join(f"{name} ({count})" for name, count in formats.most_common())),
            ("channels", f"{cases[0]['channels']} ({channel_names})"), ("names", names)]
    return ["## Unlabeled data", "", *_table(rows)]


def _count(number: int) -> str:
    """``123,456``, or ``2,097,152 (2.1 million)`` from a million on."""
    for size, word in ((1e12, "trillion"), (1e9, "billion"), (1e6, "million")):
        if number >= size:
            return f"{number:,} ({number / size:.3g} {word})"
    return f"{number:,}"


def _device(session: Mapping) -> str:
    processes = session["processes"]
    if session["device"] == "cpu":
        where = f"{processes} process{'es' if processes > 1 else ''} on the CPU"
    else:
        where = f"{processes} x {session['device_name']} ({session['device']}), CPU"
    return f"{where} ({session['cpu']}, {session['cpu_count']} cores), torch {session['torch']}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def _hardware(run: PretrainingRun) -> list[str]:
    sessions = run.run.get("sessions") or []
    used = Counter(_device(s) for s in sessions)
    hardware = "; ".join(used) if used else \
        f"{run.meta.get('world_size', 1)} x {run.run.get('request', {}).get('device', '?')} (no details recorded)"
    times = run.checkpoint.get("logging", {}).get("epoch_times") or []
    wall = f"{_duration(sum(times))} for {len(times)} epochs ({sum(times) / len(times):.1f} s per epoch; planning " \
        f"and preprocessing not included)" if times else "not recorded"
    rows = [("hardware", hardware), ("training wall time", wall),
            ("sessions", f"{len(sessions)} (started {', '.join(s['started'] for s in sessions)})" if sessions
             else NOT_RECORDED)]
    return ["## Hardware and time", "", *_table(rows)]


def _figures(run: PretrainingRun) -> list[str]:
    lines = ["## Figures", ""]
    if run.has_progress_figure:
        lines += [f"![Losses, learning rate and val / trivial per epoch]({PROGRESS_FIGURE})", ""]
    if run.preview_epoch is not None:
        lines += [f"![Reconstruction of a validation patch after epoch {run.preview_epoch}]({PREVIEW_FILE})", ""]
    return lines if len(lines) > 2 else []


def _publish(options: CardOptions) -> list[str]:
    repo = options.repo_id or PLACEHOLDER_REPO
    return ["## Publish", "", "This folder is a complete model repository; upload it with huggingface_hub's "
            "command line (`hf`; `huggingface-cli` before huggingface_hub 1.0):", "", "```bash",
            f"huggingface-cli upload {repo} <this folder>    # huggingface_hub < 1.0",
            f"hf upload {repo} <this folder>                 # huggingface_hub >= 1.0", "```", ""]


def model_card(run: PretrainingRun, options: CardOptions) -> str:
    """The ``README.md`` of the exported repository."""
    sections = [_yaml_header(run, options), _summary(run), _usage(run, options), _method(run), _network(run),
                _spacing(run), _data(run, options), _hardware(run), _figures(run), _publish(options)]
    return "\n".join(line for section in sections for line in section).rstrip("\n") + "\n"
