"""The image corruptions of Models Genesis (Zhou et al., MedIA 2021), on torch tensors.

Each function takes one patch (C, Z, Y, X) with intensities in [0, 1] and returns a corrupted copy
of the same shape. Sizes, positions and choices come from a CPU ``torch.Generator`` (reproducible from
the seed); bulk noise and shuffle keys come from a generator on the patch's device seeded from it, and
all the work runs on that device. Sizes and probabilities follow the paper's code
(``generate_pair``).
"""

from __future__ import annotations

import math

import torch

# local shuffling handles the boxes in groups of at most this many voxel indices (bounded memory)
_SHUFFLE_GROUP_ELEMENTS = 1 << 21


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in [low, high], both inclusive (Python's ``random.randint``); high < low gives low."""
    return low + int(torch.randint(0, max(high - low, 0) + 1, (1,), generator=generator))


def bezier_intensity_map(image: torch.Tensor, generator: torch.Generator, samples: int = 1000) -> torch.Tensor:
    """Maps intensities through a random cubic Bézier curve from (0, 0) to (1, 1) with two random
    control points; with p = 0.5 the map is inverted (the paper's unsorted y values)."""
    controls = torch.rand(4, generator=generator)
    px = torch.tensor([0.0, float(controls[0]), float(controls[1]), 1.0], dtype=torch.float64)
    py = torch.tensor([0.0, float(controls[2]), float(controls[3]), 1.0], dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, samples, dtype=torch.float64)
    basis = torch.stack([math.comb(3, i) * t ** (3 - i) * (1 - t) ** i for i in range(4)])  # (4, samples)
    xvals, yvals = px @ basis, py @ basis  # t runs from the (1, 1) end to the (0, 0) end
    xvals = torch.sort(xvals).values
    if bool(torch.rand((), generator=generator) < 0.5):
        yvals = torch.sort(yvals).values  # an increasing map
    # else y stays in curve order, which starts at the (1, 1) end: an inverted map, as in the paper's code
    return _interp(image, xvals.to(image.device), yvals.to(image.device))


def _interp(values: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """``numpy.interp`` for tensors: piecewise-linear through (xp, fp), xp increasing, clamped at the ends."""
    flat = values.reshape(-1).double()
    right = torch.searchsorted(xp, flat).clamp(1, xp.numel() - 1)
    left = right - 1
    span = (xp[right] - xp[left]).clamp_min(1e-12)
    weight = ((flat - xp[left]) / span).clamp(0, 1)
    return (fp[left] + weight * (fp[right] - fp[left])).reshape(values.shape).to(values.dtype)


def _device_generator(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded from ``generator``: bulk random numbers are drawn where they are
    used, and the run stays reproducible from its seed (per device type)."""
    device_generator = torch.Generator(device=device)
    device_generator.manual_seed(int(torch.randint(0, 2**62, (), generator=generator)))
    return device_generator


def local_shuffle(image: torch.Tensor, num_boxes: int, generator: torch.Generator) -> torch.Tensor:
    """Shuffles the voxels inside ``num_boxes`` random boxes, each 1 to 1/10 of the patch per axis,
    reading from the original patch (overlapping boxes: a later one wins, as in the paper)."""
    c, *shape = image.shape
    device = image.device
    max_size = torch.tensor([max(1, d // 10) for d in shape])
    sizes = 1 + (torch.rand(num_boxes, 3, generator=generator) * max_size).long()
    origins = (torch.rand(num_boxes, 3, generator=generator) * (torch.tensor(shape) - sizes + 1)).long()
    # The shuffle keys (num_boxes x voxels per box) are drawn and sorted on the patch's device: on the
    # host they cost more than a GPU training step.
    key_generator = _device_generator(generator, device)
    sizes, origins, last = sizes.to(device), origins.to(device), torch.tensor(shape, device=device) - 1
    offsets = torch.stack(torch.meshgrid(*(torch.arange(int(m), device=device) for m in max_size),
                                         indexing="ij"), -1).view(-1, 3)
    strides = torch.tensor([shape[1] * shape[2], shape[2], 1], device=device)
    source, out = image.reshape(c, -1), image.reshape(c, -1).clone()
    group = max(1, _SHUFFLE_GROUP_ELEMENTS // offsets.shape[0])
    for start in range(0, num_boxes, group):
        size, origin = sizes[start:start + group], origins[start:start + group]
        inside = (offsets[None] < size[:, None]).all(-1)  # (n, K) offsets within each box
        flat = ((origin[:, None] + offsets[None]).clamp_max(last) * strides).sum(-1)
        keys = torch.rand(inside.shape, generator=key_generator, device=device).masked_fill(~inside, 2.0)
        source_index = flat.gather(1, keys.argsort(dim=1))  # inside offsets first, in random order
        target_index = flat.gather(1, (~inside).to(torch.uint8).argsort(dim=1, stable=True))  # in order
        used = torch.arange(offsets.shape[0], device=device)[None] < inside.sum(1, keepdim=True)
        out[:, target_index[used]] = source[:, source_index[used]]
    return out.view_as(image)


def _box(shape: list[int], sizes: list[int], generator: torch.Generator) -> tuple[slice, ...]:
    """A box of ``sizes`` placed at least 3 voxels from the low border where the patch allows."""
    starts = []
    for d, s in zip(shape, sizes):
        high = d - s - 3
        starts.append(_randint(min(3, max(high, 0)), high, generator))
    return tuple(slice(b, b + s) for b, s in zip(starts, sizes))


def in_paint(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Up to 5 boxes (1/6 to 1/3 of the patch per axis; each further box with p = 0.95) become uniform noise."""
    out, shape = image.clone(), list(image.shape[1:])
    noise_generator = _device_generator(generator, image.device)
    for _ in range(5):
        if not bool(torch.rand((), generator=generator) < 0.95):
            break
        sizes = [max(1, _randint(d // 6, d // 3, generator)) for d in shape]
        box = _box(shape, sizes, generator)
        noise = torch.rand(image.shape[0], *sizes, generator=noise_generator, device=image.device)
        out[(slice(None), *box)] = noise.to(image.dtype)
    return out


def out_paint(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniform noise everywhere except one box and up to 4 more (each with p = 0.95) of 3/7 to 4/7
    of the patch per axis, which keep the original."""
    shape = list(image.shape[1:])
    noise_generator = _device_generator(generator, image.device)
    out = torch.rand(image.shape, generator=noise_generator, device=image.device).to(image.dtype)
    for index in range(5):
        if index > 0 and not bool(torch.rand((), generator=generator) < 0.95):
            break
        sizes = [max(1, d - _randint(3 * d // 7, 4 * d // 7, generator)) for d in shape]
        box = (slice(None), *_box(shape, sizes, generator))
        out[box] = image[box]
    return out
