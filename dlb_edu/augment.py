"""Augmentation of whole batches: CIFAR's crop + flip, normalization, then Cutout, mixup or CutMix.

Every step's uint8 batch is cropped and flipped (He et al., 2016: zero-padded by 4 pixels, cropped back at a random
offset, half of the images flipped; :func:`random_crop_flip`), so a repeated sample gets a fresh crop and flip each
time it is drawn, then standardized per channel (:func:`normalize`). The :class:`Augmenter` may add one of these to
the normalized batch:

* Cutout (DeVries & Taylor, 2017): zero a square patch of every image; its centre is uniform over the image
  and the part outside the border is dropped. Side 16 on CIFAR-10 (8 on CIFAR-100). Zero is applied after
  normalization, i.e. the patch takes the mean colour, as in the authors' code.
* mixup (Zhang et al., ICLR 2018, Sec. 2): ``x = lam * x_i + (1 - lam) * x_j`` with ``j`` a random permutation of
  the batch and ``lam ~ Beta(a, a)``, one ``lam`` per batch; the loss is ``lam * CE(y_i) + (1 - lam) * CE(y_j)``.
  ``a = 1`` on CIFAR.
* CutMix (Yun et al., ICCV 2019, Sec. 3.1): paste a box of image ``j`` into image ``i``; ``lam ~ Beta(1, 1)`` sets
  the box's area ``(1 - lam) W H``, its centre is uniform, the box is clipped at the border and ``lam`` is recomputed
  as the area kept. On CIFAR the authors mix a batch with probability 0.5 (``--cutmix_prob 0.5``).

A batch may have *parts* that are mixed separately: a DLB batch's repeated half and fresh half each get their own
``lam`` and partners, so a repeated sample is mixed anew, like it is cropped anew. A CS-KD batch's pair half is mixed
exactly like its anchor half (same partners, same ``lam``, same box), so pair ``i`` keeps its anchor's label mix.

All randomness comes from the step's ``torch.Generator``, so a resumed run replays it. Mixup and CutMix draw their
per-part numbers (``lam``, the permutation, the box) on the host, from one 62-bit seed drawn from that generator:
on a GPU this is one synchronization per step, and only with mixup or CutMix.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import check_value
from .errors import ConfigError


def random_crop_flip(x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """CIFAR augmentation for a batch: zero-pad by ``padding``, crop back at a random offset, flip half at random.

    ``x`` is (n, C, H, W), any dtype, on any device; each image gets its own offset and flip, drawn from
    ``generator`` (which must live on ``x``'s device), so the same generator state gives the same batch.
    """
    n, _, h, w = x.shape
    dev = x.device
    offsets = torch.randint(0, 2 * padding + 1, (2, n), device=dev, generator=generator)
    flips = torch.rand(n, device=dev, generator=generator) < 0.5
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    rows = offsets[0, :, None] + torch.arange(h, device=dev)  # (n, H)
    cols = offsets[1, :, None] + torch.arange(w, device=dev)  # (n, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)  # a flipped crop reads its columns backwards
    batch = torch.arange(n, device=dev)[:, None, None]
    # Advanced indexing over (batch, row, col) gives (n, H, W, C); move channels back to dim 1.
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images to float, per-channel standardized."""
    mean = mean.to(x.device).view(1, -1, 1, 1)
    std = std.to(x.device).view(1, -1, 1, 1)
    return (x.float() / 255 - mean) / std


@dataclass
class Mix:
    """How a batch was mixed: row ``i`` is ``lam[i]`` of its own image and ``1 - lam[i]`` of row ``perm[i]``'s.

    An unmixed row has ``perm[i] == i`` and ``lam[i] == 1``.
    """
    perm: torch.Tensor  # (n,) long, positions in the batch
    lam: torch.Tensor   # (n,) float, in [0, 1]

    def targets(self, target_probs: torch.Tensor) -> torch.Tensor:
        """Mix per-row target distributions (n, K) the way the images were mixed; each row still sums to 1."""
        lam = self.lam.to(target_probs.dtype)[:, None]
        return lam * target_probs + (1 - lam) * target_probs[self.perm]


class Augmenter:
    """``x, mix = augmenter(x, batch, generator)``: the extra augmentation of one normalized batch.

    ``mix`` is None unless the batch was mixed (mixup, CutMix). The parts come from the batch's ``parts`` (a DLB
    batch's repeated and fresh halves, a CS-KD batch's pairs and anchors; a plain list is one part); with
    ``batch.mirror_mix`` all parts get the same mix.
    """

    def __init__(self, kind: str = "none", cutout_size: int = 16, mix_alpha: float = 1.0, cutmix_prob: float = 0.5):
        # The rules of TrainConfig's fields of the same names: an Augmenter is also built outside a config.
        self.kind, self.cutout_size = check_value("augment", kind), check_value("cutout_size", cutout_size)
        self.mix_alpha, self.cutmix_prob = check_value("mix_alpha", mix_alpha), check_value("cutmix_prob", cutmix_prob)

    def __call__(self, x: torch.Tensor, batch, generator: torch.Generator) -> tuple[torch.Tensor, Mix | None]:
        if self.kind == "none":
            return x, None
        if self.kind == "cutout":
            return cutout(x, self.cutout_size, generator), None
        sizes = getattr(batch, "parts", [len(x)])
        return mix_batch(x, self.kind, sizes, generator, self.mix_alpha, self.cutmix_prob,
                         mirror=getattr(batch, "mirror_mix", False))


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square in each image; centres uniform over the image, clipped at the border."""
    n, _, h, w = x.shape
    dev = x.device
    cy = torch.randint(0, h, (n, 1), device=dev, generator=generator)
    cx = torch.randint(0, w, (n, 1), device=dev, generator=generator)
    rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
    # The patch covers [c - size//2, c + size//2) in each direction, as in the authors' code.
    in_rows = (rows >= cy - size // 2) & (rows < cy + size // 2)  # (n, H)
    in_cols = (cols >= cx - size // 2) & (cols < cx + size // 2)  # (n, W)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])           # (n, H, W)
    return x * keep[:, None].to(x.dtype)


def mix_batch(x: torch.Tensor, kind: str, sizes: list[int], generator: torch.Generator, alpha: float = 1.0,
              cutmix_prob: float = 0.5, mirror: bool = False) -> tuple[torch.Tensor, Mix]:
    """Mixup or CutMix within each part of the batch (``sizes`` rows each, in order).

    With ``mirror`` all parts have one size and share one draw: row k of every part gets the same partner position,
    the same ``lam`` and the same box.
    """
    if kind not in ("mixup", "cutmix"):
        raise ConfigError(f"mix kind must be mixup or cutmix, got {kind!r}")
    if sum(sizes) != len(x) or (mirror and len(set(sizes)) > 1):
        raise ConfigError(f"batch parts {sizes} do not fit a batch of {len(x)}" + (" (mirrored parts must be equal)"
                                                                                  if mirror else ""))
    seed = int(torch.randint(0, 2 ** 62, (1,), device=generator.device, generator=generator))
    rng = np.random.default_rng(seed)
    if mirror:
        draws = [_draw(rng, kind, sizes[0], x.shape[2], x.shape[3], alpha, cutmix_prob)] * len(sizes)
    else:
        draws = [_draw(rng, kind, size, x.shape[2], x.shape[3], alpha, cutmix_prob) for size in sizes]
    out = x.clone()
    perm = torch.empty(len(x), dtype=torch.long)
    lam = torch.empty(len(x), dtype=torch.float64)
    start = 0
    for size, (part_perm, part_lam, box) in zip(sizes, draws):
        rows = slice(start, start + size)
        partners = torch.as_tensor(part_perm, device=x.device) + start
        if kind == "mixup":
            out[rows] = part_lam * x[rows] + (1 - part_lam) * x[partners]
        elif box is not None:
            y1, y2, x1, x2 = box
            out[rows, :, y1:y2, x1:x2] = x[partners, :, y1:y2, x1:x2]
        perm[rows] = torch.as_tensor(part_perm) + start
        lam[rows] = part_lam
        start += size
    return out, Mix(perm.to(x.device), lam.to(x.device))


def _draw(rng: np.random.Generator, kind: str, size: int, h: int, w: int, alpha: float, cutmix_prob: float):
    """One part's (permutation, lam, box); box is (y1, y2, x1, x2) or None. A part not mixed gets lam = 1."""
    perm = rng.permutation(size)
    lam = float(rng.beta(alpha, alpha))
    if kind == "mixup":
        return perm, lam, None
    if rng.random() >= cutmix_prob:
        return np.arange(size), 1.0, None
    # A box of area (1 - lam) H W at a uniform centre, clipped at the border; lam becomes the area kept.
    cut = np.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y1, y2 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    lam = 1.0 - (y2 - y1) * (x2 - x1) / (h * w)
    return perm, lam, (y1, y2, x1, x2)
