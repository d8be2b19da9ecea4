"""DLB's objective: cross-entropy on every sample plus a consistency term on the repeated half.

Shen et al., CVPR 2022, Eq. (4)-(5): with the previous step's logits of the repeated samples as a detached teacher,

    loss = CE(all n samples) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)),

the KL averaged over the repeated samples ("batchmean"). T = 3 and alpha = 1 in the paper. The T^2 factor keeps the
gradient of the soft term on the same scale as the cross-entropy's when T changes (Hinton et al., 2015): the
gradient of the KL with respect to a student logit is (p_student - p_teacher) / T.

T and alpha arrive checked (``config``'s rules: T in [0.01, 100], alpha >= 0); nothing here re-checks them per step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import ConfigError


def loss_precision(x: torch.Tensor) -> torch.Tensor:
    """The one precision policy of the losses: computed in the input's dtype, half precision (autocast's bf16 or
    fp16 logits) promoted to float32. float64 inputs stay float64, so reference tests hold to float64 tolerances."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def consistency_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), summed over classes, averaged over the batch.

    The teacher is detached: no gradient reaches it.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ConfigError(f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
                          f"{tuple(teacher_logits.shape)}")
    student_logits = loss_precision(student_logits)
    teacher_logits = loss_precision(teacher_logits.detach()).to(student_logits.dtype)
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return temperature ** 2 * kl


def dlb_loss(logits: torch.Tensor, targets: torch.Tensor, cached_logits: torch.Tensor | None,
             temperature: float = 3.0, alpha: float = 1.0,
             ce: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DLB's loss for one batch whose first ``len(cached_logits)`` rows are the repeated half.

    Returns ``(loss, ce, consistency)``. Without a cache (the first step of a run) it is plain cross-entropy.
    ``ce`` replaces the cross-entropy with hard ``targets`` when the caller has another one (mixed labels).
    """
    if ce is None:
        ce = F.cross_entropy(loss_precision(logits), targets)
    if cached_logits is None or len(cached_logits) == 0:
        consistency = ce.new_zeros(())
    else:
        consistency = consistency_loss(logits[: len(cached_logits)], cached_logits, temperature)
    return ce + alpha * consistency, ce, consistency
