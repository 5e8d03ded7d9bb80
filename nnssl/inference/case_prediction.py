"""Predicts one lazily readable case block by block into its label image, resumable and shared among processes.

Each process (``torchrun``: rank r of w) takes every w-th block not yet journalled, so the processes write
disjoint blocks, hence disjoint chunks. Within a process, reading the next block, predicting the current one and
writing the previous one overlap (one thread each side of the network). Memory is a few blocks' worth, never the
volume's: at most ``READ_AHEAD`` read blocks wait for the network and ``WRITE_BEHIND`` predicted blocks for disk.
"""

from __future__ import annotations

import collections
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from nnssl import distributed
from nnssl.inference import journal as journal_files
from nnssl.inference.block_prediction import BlockPredictor, FinishedBlock
from nnssl.inference.blocks import CaseBlocks, PredictOptions, default_block_shape
from nnssl.inference.output import OUTPUT_CHUNK, LabelImageWriter, label_image_path
from nnssl.inference.tissue import TissueTest, band_cell_means
from nnssl.nnunet_adapter.block_normalization import block_normalizers
from nnssl.nnunet_adapter.prediction import TrainedModel
from nnssl.volumes.discovery import UnlabeledCase
from nnssl.volumes.lazy import LazyVolume, open_case_volumes, sample_voxels

logger = logging.getLogger(__name__)

READ_AHEAD = 1
WRITE_BEHIND = 2
DEFAULT_MIN_BLOCK_EDGE = 256  # output voxels per axis, at least
DEFAULT_PATCHES_PER_BLOCK = 4  # patches per axis, at least: the halo's share of the work stays below ~1/3


def case_blocks(model: TrainedModel, volume: LazyVolume, block_shape: tuple[int, int, int] | None) -> CaseBlocks:
    """The block grid of a case (``volume``: any of its channels)."""
    transpose = model.transpose_forward
    t_shape = [volume.shape[a] for a in transpose]
    prep_shape = model.preprocessed_shape(t_shape, [volume.spacing[a] for a in transpose])
    padded = [max(n, p) for n, p in zip(prep_shape, model.patch_size)]
    if block_shape is None:
        scale = [n / p for n, p in zip(t_shape, prep_shape)]
        block_shape = default_block_shape(volume.shape, transpose, scale, model.patch_size, OUTPUT_CHUNK,
                                          DEFAULT_MIN_BLOCK_EDGE, DEFAULT_PATCHES_PER_BLOCK)
    return CaseBlocks(volume.shape, transpose, prep_shape, model.patch_size, model.tile_starts(padded), block_shape)


def settings_of(model: TrainedModel, blocks: CaseBlocks, options: PredictOptions) -> dict:
    """What an unfinished output must have been started with to be resumed."""
    return {"model": model.folder, "folds": model.folds, "step_size": model.predictor.tile_step_size,
            "mirroring": model.predictor.use_mirroring, "block_shape": list(blocks.block_shape),
            "shape": list(blocks.shape), "skip_empty": options.skip_empty,
            "probabilities": options.save_probabilities}


def _case_statistics(volumes: list[LazyVolume], skip_empty: bool) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The intensity sample of block-wise preprocessing and, from the same bands, the tissue cells' means."""
    if not skip_empty:
        return sample_voxels(volumes), None
    cells: list[np.ndarray] = []
    samples = sample_voxels(volumes, visit=lambda bands: cells.append(band_cell_means(bands)))
    return samples, np.concatenate(cells)


class _Progress:
    """Blocks done and skipped, voxels/s and ETA of this process (a tqdm bar in rank 0)."""

    def __init__(self, case_id: str, total: int, show: bool) -> None:
        self.bar = None
        if show and distributed.is_main():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=case_id, unit="block", dynamic_ncols=True)
        self.start, self.skipped, self.voxels, self.tissue_voxels = time.perf_counter(), 0, 0, 0

    def update(self, block: FinishedBlock) -> None:
        self.voxels += block.plan.out_voxels
        self.skipped += block.labels is None
        self.tissue_voxels += 0 if block.labels is None else block.plan.out_voxels
        if self.bar is not None:
            rate = self.voxels / max(time.perf_counter() - self.start, 1e-9) / 1e6
            self.bar.set_postfix_str(f"skipped {self.skipped}, {rate:.2f} Mvoxel/s", refresh=False)
            self.bar.update()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def predict_case(model: TrainedModel, case: UnlabeledCase, output_folder: str, options: PredictOptions) -> dict:
    """Writes ``<case>.ome.zarr`` into ``output_folder`` (resuming an unfinished one); returns the case summary."""
    start = time.perf_counter()
    volumes = open_case_volumes(case)
    blocks = case_blocks(model, volumes[0], options.block_shape)
    writer = LabelImageWriter(label_image_path(output_folder, case.identifier), volumes[0].shape, blocks.block_shape,
                              model.label_dtype(), model.num_heads if options.save_probabilities else 0)
    resumed = distributed.run_on_main(lambda: writer.create_or_check(settings_of(model, blocks, options)),
                                      f"creating {writer.path}")
    writer.open()
    samples, cell_means = distributed.run_on_main(lambda: _case_statistics(volumes, options.skip_empty),
                                                  f"sampling {case.identifier}")
    finished = journal_files.finished_blocks(writer.journal_folder)
    distributed.barrier()  # every process has read the journal before any appends to it
    remaining = [i for i in range(len(blocks)) if i not in finished]
    mine = remaining[distributed.rank()::distributed.world_size()]
    tissue = TissueTest(cell_means) if options.skip_empty else None
    if resumed:
        logger.info("%s: resuming, %d of %d blocks already written", case.identifier, len(finished), len(blocks))
    logger.info("%s: %s voxels in %d blocks of %s (%.2f tiles per tile of the whole image)%s", case.identifier,
                "x".join(map(str, volumes[0].shape)), len(blocks), "x".join(map(str, blocks.block_shape)),
                blocks.tiles_per_voxel(), f"; {tissue.describe()}" if tissue else "")
    schemes, use_mask, properties = model.normalization()
    normalizers = block_normalizers(schemes, use_mask, properties, samples)
    predictor = BlockPredictor(model, volumes, normalizers, blocks, tissue, options.save_probabilities)
    progress = _Progress(case.identifier, len(mine), options.progress_bar)
    with journal_files.Journal(writer.journal_folder, distributed.rank()) as journal:
        _run_blocks(predictor, [blocks.plan(i) for i in mine], writer, journal, progress)
    progress.close()
    counts = distributed.all_gather((progress.skipped, progress.tissue_voxels))
    skipped = sum(c[0] for c in counts) + sum(how == journal_files.SKIPPED for how in finished.values())
    tissue_voxels = sum(c[1] for c in counts) + sum(blocks.plan(i).out_voxels for i, how in finished.items()
                                                    if how == journal_files.PREDICTED)
    summary = {"case": case.identifier, "output": writer.final_path, "shape": list(volumes[0].shape),
               "voxels": int(np.prod(volumes[0].shape)), "blocks": len(blocks), "blocks_skipped": skipped,
               "skipped_fraction": round(skipped / len(blocks), 4), "tissue_voxels": tissue_voxels,
               "block_shape": list(blocks.block_shape), "resumed_blocks": len(finished),
               "seconds": round(time.perf_counter() - start, 2)}
    if distributed.is_main():
        label_names = {int(v): str(k) for k, v in model.predictor.dataset_json.get("labels", {}).items()
                       if isinstance(v, int)}
        writer.finish(volumes[0].spacing, label_names, {k: summary[k] for k in ("blocks", "blocks_skipped")}
                      | {"model": model.folder, "folds": model.folds})
    distributed.barrier()
    return summary


def _run_blocks(predictor: BlockPredictor, plans: list, writer: LabelImageWriter, journal: journal_files.Journal,
                progress: _Progress) -> None:
    """Reads ahead, predicts in this thread, finishes and writes behind; journals each block once written."""

    def write(block: FinishedBlock) -> FinishedBlock:
        labels = block.labels
        if labels is None:  # background; zeros also drop chunks a killed run may have left (zarr omits empty chunks)
            labels = np.zeros([e - a for a, e in block.region], writer.dtype)
        writer.write_block(block.region, labels, block.probabilities)
        journal.record(block.plan.index, journal_files.SKIPPED if block.labels is None else journal_files.PREDICTED)
        return block

    def finish_and_write(plan, logits) -> FinishedBlock:
        return write(predictor.finish(plan, logits))

    with ThreadPoolExecutor(1, "nnssl-read") as reader, ThreadPoolExecutor(1, "nnssl-write") as writer_pool:
        reads: collections.deque[Future] = collections.deque()
        writes: collections.deque[Future] = collections.deque()
        upcoming = iter(plans)
        for plan in upcoming:
            reads.append(reader.submit(predictor.read, plan))
            if len(reads) >= READ_AHEAD:
                break
        while reads:
            block = reads.popleft().result()
            following = next(upcoming, None)
            if following is not None:
                reads.append(reader.submit(predictor.read, following))
            logits = predictor.predict(block) if block.data is not None else None
            writes.append(writer_pool.submit(finish_and_write, block.plan, logits))
            while len(writes) > WRITE_BEHIND or (writes and writes[0].done()):
                progress.update(writes.popleft().result())
        while writes:
            progress.update(writes.popleft().result())
