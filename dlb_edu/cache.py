"""The soft-target cache: the detached logits of the last fresh half.

DLB's teacher is the network itself one step ago (Shen et al., CVPR 2022, Sec. 3.2). At step t the logits of the
fresh half are stored, detached from the graph; at step t+1 those samples come back as the repeated half and are
pulled toward the stored logits. Only one half-batch of logits is ever held, so the memory is
``B x num_classes x 4`` bytes (float32, plus the indices): no teacher network, no per-epoch prediction table.
"""
from __future__ import annotations

import torch

from .errors import ConfigError


class SoftTargetCache:
    """Holds the detached logits of one fresh half, keyed by their data set indices."""

    def __init__(self):
        self.indices: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None

    def put(self, indices, logits: torch.Tensor) -> None:
        """Store ``logits`` (one row per index), detached: no gradient will ever flow back into the step that made
        them."""
        indices = torch.as_tensor(indices, dtype=torch.long).cpu()
        if logits.dim() != 2 or logits.shape[0] != len(indices):
            raise ConfigError(f"logits must have shape (len(indices)={len(indices)}, num_classes), "
                              f"got {tuple(logits.shape)}")
        logits = logits.detach()
        # Kept in float32 whatever the autocast dtype (bf16 logits would round the teacher); float64 stays float64.
        half = logits.dtype in (torch.float16, torch.bfloat16)
        self.indices, self.logits = indices, logits.float() if half else logits

    def get(self, indices=None) -> torch.Tensor | None:
        """The cached logits (None before the first ``put``). With ``indices``, check they are the cached ones."""
        if indices is not None and self.indices is not None:
            asked = torch.as_tensor(indices, dtype=torch.long).cpu()
            if not torch.equal(asked, self.indices):
                raise ConfigError("the repeated half does not match the cached indices")
        return self.logits

    @property
    def nbytes(self) -> int:
        """Bytes held: the logits plus their indices."""
        if self.logits is None:
            return 0
        return (self.logits.numel() * self.logits.element_size()
                + self.indices.numel() * self.indices.element_size())

    def state_dict(self) -> dict:
        return {"indices": self.indices, "logits": None if self.logits is None else self.logits.cpu()}

    def load_state_dict(self, state: dict, device: str | torch.device = "cpu") -> None:
        self.indices = state["indices"]
        self.logits = None if state["logits"] is None else state["logits"].to(device)
