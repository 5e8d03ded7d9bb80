"""Whole-volume prediction benchmark: ``nnssl_predict`` on a light-sheet-sized volume against ``nnUNetv2_predict``.

1. Model: a synthetic labelled nnU-Net dataset (8 small organs of 48 x 96 x 96, nuclei labelled), planned and
   preprocessed by nnU-Net, plus the small configuration '3d_tiny' (3 stages 8/16/32, patch 16 x 32 x 32, as
   in the tests), fold 0 (one validation case) trained with ``nnUNetTrainer_10epochs_25iters``: 250 steps,
   ~2 min on 2 cores, validation Dice ~0.93. It is the shortest stock budget whose model segments the nuclei
   decisively; after the 10 steps of the test budget the probabilities sit near 0.5, where the agreement of
   the two tools would measure noise.
2. Volumes, at the dataset's spacing (2, 1, 1) um (no resampling), all from one generator
   (``SyntheticOrgan``): a dome-shaped organ of textured tissue with nuclei-like blobs, Gaussian-blurred like a
   light-sheet PSF, in dark background with shot noise; 59% of the bounding box is background, half of the
   256^3 blocks hold no tissue. The big volume (default 512 x 1024 x 1024 uint16, 1 GiB raw, 0.53 GiB on
   disk) and the same organ at half the voxels (y halved: 512 x 512 x 1024) are written slab by slab as
   Zstd-compressed OME-Zarr (3 levels); a volume that fits in memory (128 x 256 x 256, the same organ) is
   written as OME-Zarr and as NIfTI (nnU-Net naming ``fit_0000.nii.gz``).
3. Each tool runs as its own process while the summed PSS of its whole process tree is sampled every
   0.25 s (on CUDA also the GPU memory in use, from ``nvidia-smi``, less its idle level):
   ``nnssl_predict`` on the big and the half volume, ``nnUNetv2_predict`` and ``nnssl_predict`` (with
   ``--no-skip-empty``: every voxel is computed) on the fitting volume. Same model and flags for both tools:
   ``-d 515 -c 3d_tiny -f 0 -tr nnUNetTrainer_10epochs_25iters -device cpu --disable_tta``, default
   ``-step_size``.

Speed is voxels per second of process wall time for both tools, start-up and model loading included (a few
seconds, which weigh more on the short fitting-volume runs: the big-volume ratio slightly favours
``nnssl_predict``; ``ratio_same_volume`` has the same start-up on both sides). For the big volumes only the
voxels of blocks that were not skipped count (``tissue_voxels`` of ``OUT/predict_summary.json``); the fitting
volume counts all voxels. ``mvoxel_per_s_in_tool`` uses the seconds ``nnssl_predict`` reports itself. Without
a summary record the whole volume counts, and ``notes`` says so. Targets (issue 15): peak PSS <= 3 GiB at both
sizes; big-volume voxels/s over the non-empty part >= 0.9x ``nnUNetv2_predict``'s on the fitting volume; also
reported: the Dice between the two tools' labels on the fitting volume (>= 0.99) and the Dice of
``nnUNetv2_predict``'s labels against the generator's nuclei (is the model any good).

The last line printed is one JSON object; the exit code is 1 if a run failed or ``nnssl_predict`` is missing.
A temporary work folder is removed at the end unless --keep; a --work folder is kept, and a model and volumes
of the same settings found in it are reused.

    python benchmarks/big_predict.py                      # the acceptance run (~1 h, see below)
    python benchmarks/big_predict.py --shape 64 256 1024  # quick look (~6 min)
    python benchmarks/big_predict.py --device cuda --shape 256 1024 1024 --no-half   # in benchmarks/gpu_smoke.sh

Duration of the default acceptance run on the 2-core development machine (no GPU, nothing else running):
56 min (model 1.5 min, fitting volume 2.5 min for both tools, half volume 17 min, full volume 35 min; about
2 GB of free disk). Figures of that run: docs/results.md, "Whole-organ prediction". A competing process makes
2-thread CPU inference many times slower (an epoch of the same training took 1 s alone, 14 s beside another
job).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

import numpy as np

from nnssl.demo.synthetic import write_image
from nnssl.evaluation.files import read_segmentation

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository: tests/ fixtures
from bench_utils import GIB, folder_bytes, run_with_peaks, tree_pss_bytes

from tests import lsm_files

DATASET_ID = 515
DATASET_NAME = "BigPredictOrgan"
CONFIGURATION = "3d_tiny"
TRAINER = "nnUNetTrainer_10epochs_25iters"
SPACING = (2.0, 1.0, 1.0)  # (z, y, x) um: the dataset's and every volume's, so nnU-Net never resamples
TRAIN_SHAPE = (48, 96, 96)
NUM_TRAIN_CASES = 8
FITTING_SHAPE = (128, 256, 256)
VOLUME_LEVELS = 3

# The look of the organ, close to tests/synthetic.py's cases (same background, PSF and nucleus sizes)
BACKGROUND = 100.0  # dark background, times a left-to-right illumination gradient 0.8-1.2
AUTOFLUORESCENCE = 120.0  # tissue glow inside the organ, modulated by a smooth texture by +-50%
SIGNAL = 600.0  # a nucleus of brightness 1 before the blur
PSF_SIGMA_UM = (2.0, 0.7, 0.7)
NUCLEUS_RADII_UM = (3.0, 6.0)
NUCLEI_PER_UM3 = 1 / 2500  # ~15% of the tissue inside nuclei
CELL_PLANES = 16  # nuclei are drawn per 16 planes, each group from its own seed: any slab can be made alone


class SyntheticOrgan:
    """A cleared organ as a light-sheet microscope records it, made slab by slab in bounded memory.

    The organ is a dome: an ellipsoid centred on the x = 0 face of the volume, semi-axes (Z, Y, 0.45 X), like
    a hemisphere lying on the chamber wall. It fills 41% of the bounding box, and the empty 59% is not only
    corners: all blocks beyond x = X / 2 are background (with a volume-filling centred ellipsoid, no 256^3
    block would be empty, and skipping would show nothing). Tissue has a smooth autofluorescence texture and
    nuclei-like ellipsoids; everything is blurred by an anisotropic Gaussian PSF over dark background, with
    shot noise (a Gaussian of the Poisson variance: the same for these counts and 7x faster to draw). Every
    plane depends only on (``shape``, ``seed``, its index), never on how the volume is cut into slabs.
    ``label(z0, z1)`` is the nuclei before the blur, as in tests/synthetic.py.
    """

    def __init__(self, shape: Sequence[int], spacing: Sequence[float] = SPACING, seed: int = 0) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.spacing = np.asarray(spacing, np.float64)
        self.seed = seed
        self.centre = np.asarray(self.shape, np.float64) * [0.5, 0.5, 0.0]
        self.semi_axes = np.asarray(self.shape, np.float64) * [1.0, 1.0, 0.45]
        self.sigma = [s / sp for s, sp in zip(PSF_SIGMA_UM, spacing)]
        self.blur_reach = int(4.0 * self.sigma[0] + 0.5)  # scipy's kernel radius at truncate=4
        self.nucleus_reach = math.ceil(NUCLEUS_RADII_UM[1] / self.spacing[0]) + 1
        rng = np.random.default_rng([seed, 0])
        # texture: a sum of products of cosines, wavelengths 40-200 um on each axis
        self.waves = [(2 * np.pi * self.spacing / rng.uniform(40.0, 200.0, 3), rng.uniform(0, 2 * np.pi, 3))
                      for _ in range(4)]

    def _nuclei(self, cell: int) -> np.ndarray:
        """(n, 7) rows of centre (z, y, x), radii (z, y, x) in voxels and brightness, of one plane group,
        the nuclei whose centre lies inside the organ."""
        rng = np.random.default_rng([self.seed, 1, cell])
        z0, z1 = cell * CELL_PLANES, min((cell + 1) * CELL_PLANES, self.shape[0])
        box = np.array([z1 - z0, self.shape[1], self.shape[2]], np.float64)
        count = rng.poisson(float(np.prod(box * self.spacing)) * NUCLEI_PER_UM3)
        centres = rng.uniform(0, 1, (count, 3)) * box + [z0, 0, 0]
        radii = rng.uniform(*NUCLEUS_RADII_UM, (count, 3)) / self.spacing
        brightness = rng.uniform(0.5, 1.0, (count, 1))
        inside = (((centres - self.centre) / self.semi_axes) ** 2).sum(axis=1) <= 1.0
        return np.concatenate([centres, radii, brightness], axis=1)[inside]

    def organ_mask(self, z0: int, z1: int) -> np.ndarray:
        """The organ in planes z0..z1 (bool)."""
        axes = [np.arange(z0, z1), np.arange(self.shape[1]), np.arange(self.shape[2])]
        d2 = [((a - c) / r).astype(np.float32) ** 2 for a, c, r in zip(axes, self.centre, self.semi_axes)]
        return (d2[0][:, None, None] + d2[1][None, :, None] + d2[2][None, None, :]) <= 1.0

    def _objects(self, z0: int, z1: int) -> np.ndarray:
        """The nuclei (brightness, before the blur) of planes z0..z1, which may reach outside the volume."""
        out = np.zeros((z1 - z0, self.shape[1], self.shape[2]), np.float32)
        first = max(0, (z0 - self.nucleus_reach) // CELL_PLANES)
        last = min((self.shape[0] - 1) // CELL_PLANES, (z1 + self.nucleus_reach) // CELL_PLANES)
        for cell in range(first, last + 1):
            for cz, cy, cx, rz, ry, rx, value in self._nuclei(cell):
                lower = [max(z0, math.floor(cz - rz)), max(0, math.floor(cy - ry)), max(0, math.floor(cx - rx))]
                upper = [min(z1, math.ceil(cz + rz) + 1), min(self.shape[1], math.ceil(cy + ry) + 1),
                         min(self.shape[2], math.ceil(cx + rx) + 1)]
                if any(lo >= up for lo, up in zip(lower, upper)):
                    continue
                zz, yy, xx = np.ogrid[lower[0]:upper[0], lower[1]:upper[1], lower[2]:upper[2]]
                inside = ((zz - cz) / rz) ** 2 + ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
                view = out[lower[0] - z0:upper[0] - z0, lower[1]:upper[1], lower[2]:upper[2]]
                np.maximum(view, np.float32(value) * inside, out=view)
        return out

    def _texture(self, z0: int, z1: int) -> np.ndarray:
        """Smooth autofluorescence modulation in [0.5, 1.5] of planes z0..z1."""
        axes = [np.arange(z0, z1), np.arange(self.shape[1]), np.arange(self.shape[2])]
        zy, x = [], []
        for frequency, phase in self.waves:
            cz, cy, cx = (np.cos(f * a + p).astype(np.float32) for f, a, p in zip(frequency, axes, phase))
            zy.append(cz[:, None] * cy[None, :])
            x.append(cx)
        # the sum over waves of zy * x products as one matrix product (BLAS), not one pass per wave
        out = (np.stack(zy, axis=-1).reshape(-1, len(x)) @ np.stack(x)).reshape(z1 - z0, *self.shape[1:])
        out *= 0.5 / len(x)  # 1 + half the mean of the waves: within [0.5, 1.5]
        out += 1.0
        return out

    def image(self, z0: int, z1: int) -> np.ndarray:
        """Planes z0..z1 as uint16 (z, y, x)."""
        from scipy import ndimage

        reach = self.blur_reach
        objects = self._objects(z0 - reach, z1 + reach)
        ndimage.gaussian_filter(objects, self.sigma, output=objects)  # in place: a slab-sized array less
        expected = objects[reach:reach + z1 - z0]
        expected *= SIGNAL
        expected += BACKGROUND * np.linspace(0.8, 1.2, self.shape[2], dtype=np.float32)
        glow = self._texture(z0, z1)
        glow *= self.organ_mask(z0, z1)
        glow *= AUTOFLUORESCENCE
        expected += glow
        del glow
        for z in range(z0, z1):  # noise drawn per plane: the same planes whatever the slabs
            noise = np.random.default_rng([self.seed, 2, z]).standard_normal(self.shape[1:], np.float32)
            plane = expected[z - z0]
            plane += np.sqrt(plane) * noise
        return np.clip(np.rint(expected), 0, np.iinfo(np.uint16).max).astype(np.uint16)

    def label(self, z0: int, z1: int) -> np.ndarray:
        """The nuclei of planes z0..z1 (uint8, 1 = nucleus)."""
        return (self._objects(z0, z1) > 0).astype(np.uint8)


# ----------------------------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    print(f"[big_predict {time.strftime('%H:%M:%S')}] {message}", flush=True)


def bin_path(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def nnunet_env(work: str) -> dict:
    """This process's environment with nnU-Net's folders inside ``work`` and quiet, compile-free settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnssl_")}
    env.update({key: os.path.join(work, key) for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
    env.update(nnUNet_compile="false", PYTHONWARNINGS="ignore")
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.makedirs(env[key], exist_ok=True)
    return env


def run_checked(command: list[str], env: dict, log_file: str) -> None:
    """Runs ``command`` with its output in ``log_file``; on failure shows the output's tail and stops."""
    with open(log_file, "w") as f:
        code = subprocess.run(command, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if code != 0:
        with open(log_file) as f:
            print(f.read()[-4000:])
        raise SystemExit(f"{os.path.basename(command[0])} failed with exit code {code} (log: {log_file})")


def dataset_folder(env: dict, kind: str) -> str:
    return os.path.join(env[kind], f"Dataset{DATASET_ID:03d}_{DATASET_NAME}")


def model_folder(env: dict) -> str:
    return os.path.join(dataset_folder(env, "nnUNet_results"), f"{TRAINER}__nnUNetPlans__{CONFIGURATION}")


# ----------------------------------------------------------------------------------------------- model


def write_dataset(env: dict) -> None:
    """nnU-Net raw dataset: ``NUM_TRAIN_CASES`` small organs (NIfTI), labels = nuclei."""
    folder = dataset_folder(env, "nnUNet_raw")
    for sub in ("imagesTr", "labelsTr"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    for i in range(NUM_TRAIN_CASES):
        organ = SyntheticOrgan(TRAIN_SHAPE, seed=1000 + i)
        case = f"{DATASET_NAME}_{i:03d}"
        write_image(organ.image(0, TRAIN_SHAPE[0]), os.path.join(folder, "imagesTr", f"{case}_0000.nii.gz"), SPACING)
        write_image(organ.label(0, TRAIN_SHAPE[0]), os.path.join(folder, "labelsTr", f"{case}.nii.gz"), SPACING)
    dataset_json = {"channel_names": {"0": "LSM"}, "labels": {"background": 0, "nucleus": 1},
                    "numTraining": NUM_TRAIN_CASES, "file_ending": ".nii.gz", "name": DATASET_NAME,
                    "description": "Synthetic cleared organs with nuclei (benchmarks/big_predict.py)"}
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump(dataset_json, f, indent=2)


def add_tiny_configuration(env: dict) -> None:
    """'3d_tiny' (3 stages, 8/16/32 features, patch 16x32x32, batch 2) on 3d_fullres's preprocessed data."""
    from nnssl.nnunet_adapter.plans_and_networks import get_configuration, make_small_configuration

    plans_file = os.path.join(dataset_folder(env, "nnUNet_preprocessed"), "nnUNetPlans.json")
    with open(plans_file) as f:
        plans = json.load(f)
    fullres = get_configuration(plans, "3d_fullres", plans_file).configuration
    plans["configurations"][CONFIGURATION] = make_small_configuration(fullres)
    with open(plans_file, "w") as f:
        json.dump(plans, f, indent=2)


def write_split(env: dict) -> None:
    """Fold 0 validates on one case: nnU-Net's final validation (sliding window with mirroring) of its default
    two cases would take longer than the training itself on 2 cores."""
    cases = [f"{DATASET_NAME}_{i:03d}" for i in range(NUM_TRAIN_CASES)]
    with open(os.path.join(dataset_folder(env, "nnUNet_preprocessed"), "splits_final.json"), "w") as f:
        json.dump([{"train": cases[1:], "val": cases[:1]}], f, indent=2)


def train_model(env: dict, work: str, device: str) -> float | None:
    """Dataset, plans, '3d_tiny' and fold 0 of ``TRAINER``; reused when ``work`` already holds the model.
    Returns the seconds it took (None when reused)."""
    stamp = os.path.join(work, "model.json")
    wanted = {"trainer": TRAINER, "configuration": CONFIGURATION, "cases": NUM_TRAIN_CASES, "shape": TRAIN_SHAPE}
    wanted = json.loads(json.dumps(wanted))  # tuples as lists, as read back
    if os.path.isfile(stamp) and os.path.isfile(os.path.join(model_folder(env), "fold_0", "checkpoint_final.pth")):
        with open(stamp) as f:
            if json.load(f) == wanted:
                log(f"model: reusing {model_folder(env)}")
                return None
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        shutil.rmtree(dataset_folder(env, key), ignore_errors=True)
    started = time.perf_counter()
    log(f"model: writing {NUM_TRAIN_CASES} training organs {TRAIN_SHAPE}, planning, preprocessing")
    write_dataset(env)
    plan_env = dict(env, nnUNet_def_n_proc="1")
    run_checked([bin_path("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "3d_fullres", "-np", "1",
                 "-npfp", "1", "--no_pbar"], plan_env, os.path.join(work, "logs", "plan_and_preprocess.log"))
    add_tiny_configuration(env)
    write_split(env)
    log(f"model: training {TRAINER} ({CONFIGURATION}, fold 0, {device})")
    train_env = dict(env, nnUNet_n_proc_DA="0")  # augmentation in the trainer's process: tiny patches, 2 cores
    run_checked([bin_path("nnUNetv2_train"), str(DATASET_ID), CONFIGURATION, "0", "-tr", TRAINER, "-device", device],
                train_env, os.path.join(work, "logs", "train.log"))
    seconds = time.perf_counter() - started
    with open(stamp, "w") as f:
        json.dump(wanted, f)
    log(f"model: done in {seconds:.0f} s")
    return seconds


# ----------------------------------------------------------------------------------------------- volumes


def write_big_volume(path: str, shape: Sequence[int], seed: int) -> dict:
    """The organ as a compressed OME-Zarr, slab by slab; reused if ``path`` holds the same volume."""
    stamp = os.path.join(os.path.dirname(path), "volume.json")
    wanted = {"shape": list(shape), "seed": seed, "levels": VOLUME_LEVELS}
    if os.path.isfile(stamp):
        with open(stamp) as f:
            recorded = json.load(f)
        if {k: recorded.get(k) for k in wanted} == wanted:
            log(f"volume: reusing {path}")
            return recorded
    shutil.rmtree(os.path.dirname(path), ignore_errors=True)
    os.makedirs(os.path.dirname(path))
    log(f"volume: writing {path} {list(shape)}")
    started = time.perf_counter()
    organ = SyntheticOrgan(shape, seed=seed)
    lsm_files.write_ome_zarr(path, shape, np.uint16, organ.image, SPACING, levels=VOLUME_LEVELS)
    recorded = dict(wanted, write_s=round(time.perf_counter() - started, 1),
                    file_gib=round(folder_bytes(path) / GIB, 3))
    with open(stamp, "w") as f:
        json.dump(recorded, f)
    log(f"volume: {recorded}")
    return recorded


def write_fitting_volume(folder: str, seed: int) -> np.ndarray:
    """The fitting volume as ``zarr/fit.ome.zarr`` and ``nifti/fit_0000.nii.gz``; returns its nuclei."""
    organ = SyntheticOrgan(FITTING_SHAPE, seed=seed)
    image = organ.image(0, FITTING_SHAPE[0])
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(os.path.join(folder, "zarr"))
    os.makedirs(os.path.join(folder, "nifti"))
    lsm_files.write_ome_zarr(os.path.join(folder, "zarr", "fit.ome.zarr"), FITTING_SHAPE, np.uint16,
                             lambda z0, z1: image[z0:z1], SPACING, levels=VOLUME_LEVELS)
    write_image(image, os.path.join(folder, "nifti", "fit_0000.nii.gz"), SPACING)
    return organ.label(0, FITTING_SHAPE[0])


# ----------------------------------------------------------------------------------------------- prediction


def gpu_memory_used_bytes(_pid: int) -> float:
    """Memory in use on GPU 0 by all processes (nvidia-smi): the tools run alone, the idle level is subtracted."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=10).stdout
        return float(out.split()[0]) * 1024**2
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return 0.0


def nnssl_predict_problem(env: dict) -> str | None:
    """Why ``nnssl_predict`` cannot run here (None if it can)."""
    tool = bin_path("nnssl_predict")
    if not os.path.isfile(tool):
        return f"{tool} not found: install nnssl (pip install -e .) in this environment"
    result = subprocess.run([tool, "-h"], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
        return f"{tool} -h exited {result.returncode}: {tail[0]}"
    return None


def case_record(summary, case: str) -> dict | None:
    """The record of ``case`` in a ``predict_summary.json`` (a list of records, {"cases": ...} or by case)."""
    if isinstance(summary, dict) and "cases" in summary:
        summary = summary["cases"]
    if isinstance(summary, dict):
        summary = [dict(record, case=record.get("case", name)) for name, record in summary.items()
                   if isinstance(record, dict)]
    return next((r for r in summary if isinstance(r, dict) and r.get("case") == case), None)


def predict(tool: str, input_folder: str, out: str, case: str, voxels: int, env: dict, args: argparse.Namespace,
            extra: Sequence[str] = ()) -> dict:
    """Runs one tool under the memory samplers; returns what was measured (``error`` if it failed)."""
    shutil.rmtree(out, ignore_errors=True)
    command = [bin_path(tool), "-i", input_folder, "-o", out, "-d", str(DATASET_ID), "-c", CONFIGURATION, "-f", "0",
               "-tr", TRAINER, "-device", args.device, "--disable_tta", *extra]
    samplers = {"pss": tree_pss_bytes}
    idle_gpu = gpu_memory_used_bytes(0) if args.device == "cuda" else 0.0
    if args.device == "cuda":
        samplers["gpu"] = gpu_memory_used_bytes
    log(f"predict: {' '.join([tool, *command[1:]])}")
    code, peaks, output, seconds = run_with_peaks(command, env, samplers)
    with open(os.path.join(args.work, "logs", f"{tool}_{os.path.basename(out)}.log"), "w") as f:
        f.write(output)
    result = {"tool": tool, "case": case, "voxels": voxels, "wall_s": round(seconds, 1),
              "peak_pss_gib": round(peaks["pss"] / GIB, 3)}
    if "gpu" in peaks:
        result["peak_gpu_gib"] = round(max(0.0, peaks["gpu"] - idle_gpu) / GIB, 3)
    if code != 0:
        result["error"] = f"{tool} exited {code}: {output.strip().splitlines()[-1] if output.strip() else ''}"
        print(output[-3000:], flush=True)
        log(f"predict: FAILED {result['error']}")
        return result
    if tool != "nnssl_predict":
        log(f"predict: {result}")
        return result
    summary_file = os.path.join(out, "predict_summary.json")
    record = None
    if os.path.isfile(summary_file):
        with open(summary_file) as f:
            record = case_record(json.load(f), case)
    if record is None:
        result["note"] = f"no predict_summary.json record for {case}: all voxels counted as non-empty"
    else:
        result.update({key: record[key] for key in ("blocks", "blocks_skipped", "skipped_fraction", "seconds",
                                                    "tissue_voxels") if key in record})
        result.update({key: value for key, value in record.items() if "memory" in key})  # GPU peaks, if reported
    log(f"predict: {result}")
    return result


def rate(voxels: float | None, seconds: float | None) -> float | None:
    return round(voxels / seconds / 1e6, 3) if voxels and seconds else None


def foreground_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Foreground Dice (one label here: nucleus), ``nnssl.evaluation``'s (nnU-Net's rule: NaN when both are
    empty)."""
    from nnssl.evaluation.overlap import overlap_metrics

    return round(overlap_metrics(a > 0, b > 0)["Dice"], 4)


# ----------------------------------------------------------------------------------------------- main


def half_shape(shape: Sequence[int]) -> list[int]:
    """The same organ at half the voxels: y halved. The plane area halves too (memory growing with the plane
    would show), while x, across which the organ ends, keeps its blocks: the same fraction is skipped."""
    return [shape[0], max(4, shape[1] // 2 // 4 * 4), shape[2]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 1024, 1024], metavar=("Z", "Y", "X"),
                        help="the big volume (default: the acceptance size)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="training and prediction")
    parser.add_argument("--no-half", action="store_true", help="skip the half-size volume")
    parser.add_argument("--skip-nnunet", action="store_true",
                        help="skip the fitting volume (nnUNetv2_predict, the ratio and the Dice)")
    parser.add_argument("--work", default=None,
                        help="work folder, kept, and reused: a trained model and volumes of the same shape in it "
                             "are not made again (default: a temporary folder, removed unless --keep)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    args = parser.parse_args()
    started = time.perf_counter()
    own_work = args.work is None
    args.work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="nnssl_big_predict_"))
    os.makedirs(os.path.join(args.work, "logs"), exist_ok=True)
    env = nnunet_env(args.work)
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
    notes, legs = [], {}
    try:
        train_s = train_model(env, args.work, args.device)
        problem = nnssl_predict_problem(env)
        if problem:
            notes.append(f"nnssl_predict legs not run: {problem}")
            log(f"nnssl_predict cannot run: {problem}")
        inputs, outputs = os.path.join(args.work, "inputs"), os.path.join(args.work, "predictions")
        dice_tools = dice_truth = None
        if not args.skip_nnunet:
            truth = write_fitting_volume(os.path.join(inputs, "fit"), seed=7)
            voxels = int(np.prod(FITTING_SHAPE))
            legs["nnunet_fitting"] = predict("nnUNetv2_predict", os.path.join(inputs, "fit", "nifti"),
                                             os.path.join(outputs, "nnunet_fitting"), "fit", voxels, env, args)
            nnunet_labels = None
            if "error" not in legs["nnunet_fitting"]:
                nnunet_labels = read_segmentation(os.path.join(outputs, "nnunet_fitting", "fit.nii.gz"))
                dice_truth = foreground_dice(nnunet_labels, truth)
            if not problem:
                legs["nnssl_fitting"] = predict("nnssl_predict", os.path.join(inputs, "fit", "zarr"),
                                                os.path.join(outputs, "nnssl_fitting"), "fit", voxels, env, args,
                                                extra=["--no-skip-empty"])
                if nnunet_labels is not None and "error" not in legs["nnssl_fitting"]:
                    dice_tools = foreground_dice(
                        read_segmentation(os.path.join(outputs, "nnssl_fitting", "fit.ome.zarr")), nnunet_labels)
        sizes = {"full": args.shape} if args.no_half else {"half": half_shape(args.shape), "full": args.shape}
        volumes = {}
        for name, shape in sizes.items() if not problem else ():
            folder = os.path.join(inputs, name)
            volumes[name] = write_big_volume(os.path.join(folder, "organ.ome.zarr"), shape, seed=1)
            legs[f"nnssl_{name}"] = predict("nnssl_predict", folder, os.path.join(outputs, name), "organ",
                                            int(np.prod(shape)), env, args)
    finally:
        if own_work and not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)

    def leg(name: str, key: str):
        return legs.get(name, {}).get(key) if "error" not in legs.get(name, {}) else None

    def nonempty_voxels(name: str) -> int | None:
        if name not in legs or "error" in legs[name]:
            return None
        return legs[name].get("tissue_voxels", legs[name]["voxels"])

    rates = {"nnssl_full_nonempty": rate(nonempty_voxels("nnssl_full"), leg("nnssl_full", "wall_s")),
             "nnssl_half_nonempty": rate(nonempty_voxels("nnssl_half"), leg("nnssl_half", "wall_s")),
             "nnssl_fitting": rate(leg("nnssl_fitting", "voxels"), leg("nnssl_fitting", "wall_s")),
             "nnunet_fitting": rate(leg("nnunet_fitting", "voxels"), leg("nnunet_fitting", "wall_s"))}
    in_tool = {"nnssl_full_nonempty": rate(nonempty_voxels("nnssl_full"), leg("nnssl_full", "seconds")),
               "nnssl_half_nonempty": rate(nonempty_voxels("nnssl_half"), leg("nnssl_half", "seconds")),
               "nnssl_fitting": rate(leg("nnssl_fitting", "voxels"), leg("nnssl_fitting", "seconds"))}
    peak = {name: leg(f"nnssl_{name}", "peak_pss_gib") for name in ("full", "half")}
    ratio = (round(rates["nnssl_full_nonempty"] / rates["nnunet_fitting"], 3)
             if rates["nnssl_full_nonempty"] and rates["nnunet_fitting"] else None)
    same_volume = (round(rates["nnssl_fitting"] / rates["nnunet_fitting"], 3)
                   if rates["nnssl_fitting"] and rates["nnunet_fitting"] else None)
    measured_peaks = [p for p in peak.values() if p is not None]
    notes += [f"{name}: {legs[name]['note']}" for name in legs if "note" in legs[name]]
    notes += [f"{name}: {legs[name]['error']}" for name in legs if "error" in legs[name]]
    result = {
        "shape": args.shape, "half_shape": sizes.get("half"), "fitting_shape": list(FITTING_SHAPE),
        "device": args.device, "trainer": TRAINER, "configuration": CONFIGURATION,
        "peak_pss_gib": peak, "mvoxel_per_s": rates, "mvoxel_per_s_in_tool": in_tool,
        "ratio_vs_nnunet": ratio, "ratio_same_volume": same_volume,
        "skipped_fraction": {name: leg(f"nnssl_{name}", "skipped_fraction") for name in ("full", "half")},
        "targets_met": {"peak_pss_le_3gib": all(p <= 3.0 for p in measured_peaks) if measured_peaks else None,
                        "speed_ge_0.9x": None if ratio is None else ratio >= 0.9,
                        "dice_ge_0.99": None if dice_tools is None else dice_tools >= 0.99},
        "dice_nnssl_vs_nnunet_fitting": dice_tools, "dice_nnunet_vs_truth_fitting": dice_truth,
        "train_s": None if train_s is None else round(train_s, 1), "volumes": volumes, "legs": legs,
        "total_s": round(time.perf_counter() - started, 1),
        "timing": "mvoxel_per_s: process wall time of each tool (start-up and model loading included); "
                  "mvoxel_per_s_in_tool: the seconds nnssl_predict reports; *_nonempty: voxels of blocks not skipped",
        "notes": notes,
    }
    if args.device == "cuda":
        result["peak_gpu_gib"] = {name: leg(name, "peak_gpu_gib") for name in legs}
    print(json.dumps(result))
    if any("error" in r for r in legs.values()) or problem:
        sys.exit(1)


if __name__ == "__main__":
    main()
