"""The running statistics of one training epoch, from which its history row is made.

Every step adds its loss, its cross-entropy, its consistency term (the method's extra term) and how many of its
scored predictions were right. The sums stay on the training device, so a step never waits for the GPU; they are
read once, at the end of the epoch. They are part of a checkpoint, so an epoch resumed in the middle reports the
same numbers as one trained in one go.
"""
from __future__ import annotations

import torch

from . import distributed


class EpochStats:
    """Sums over the steps of the 0-based ``epoch`` so far (``time_s``: seconds of training, summed over
    interruptions)."""

    def __init__(self, epoch: int = 0, device="cpu"):
        self.epoch = epoch
        zero = torch.zeros((), device=device)
        self.step_losses: list[torch.Tensor] = []  # one 0-d tensor per step
        self.ce_sum, self.consistency_sum, self.correct = zero.clone(), zero.clone(), zero.clone()
        self.seen = 0
        self.time_s = 0.0

    def add(self, loss: torch.Tensor, ce: torch.Tensor, consistency: torch.Tensor, correct: torch.Tensor,
            seen: int) -> None:
        self.step_losses.append(loss.detach())
        self.ce_sum += ce.detach()
        self.consistency_sum += consistency.detach()
        self.correct += correct
        self.seen += seen

    def first_non_finite_step(self) -> int | None:
        """The 0-based index, within the epoch so far, of the first step whose loss is NaN or infinite."""
        if not self.step_losses:
            return None
        bad = (~torch.isfinite(torch.stack(self.step_losses))).nonzero()
        return int(bad[0]) if len(bad) else None

    def row(self) -> dict:
        """The epoch's training columns of the history, averaged over the processes (every one ran as many steps)."""
        losses = distributed.average(torch.stack(self.step_losses).float())
        sums = distributed.average(torch.stack([self.ce_sum, self.consistency_sum, self.correct,
                                                torch.tensor(float(self.seen), device=self.correct.device)]))
        n = len(losses)
        return {
            "train_loss": losses.mean().item(),
            "train_ce": (sums[0] / n).item(),
            "train_consistency": (sums[1] / n).item(),
            "train_acc": (sums[2] / sums[3].clamp_min(1)).item(),
            "step_loss_std": losses.std().item() if n > 1 else 0.0,
            "epoch_time_s": self.time_s,
        }

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step_losses": [t.cpu() for t in self.step_losses], "ce_sum": self.ce_sum.cpu(),
                "consistency_sum": self.consistency_sum.cpu(), "correct": self.correct.cpu(), "seen": self.seen,
                "time_s": self.time_s}

    def load_state_dict(self, state: dict, device="cpu") -> None:
        self.epoch = state["epoch"]
        self.step_losses = [t.to(device) for t in state["step_losses"]]
        self.ce_sum, self.consistency_sum = state["ce_sum"].to(device), state["consistency_sum"].to(device)
        self.correct, self.seen, self.time_s = state["correct"].to(device), state["seen"], state["time_s"]
