"""Our DLB step, with the `paper` preset, is the authors' step: same loss, same gradients, same BatchNorm updates.

The reference below is a direct transcription of the authors' training step (github:Meta-knowledge-Lab/DLB,
`dlb.py`), written from its description, in float64:

    out      = model(fresh images)                      # first call: the fresh batch alone
    out_pre  = model(previous batch, second view)       # second call: the repeated half alone
    ce       = CE(cat(out_pre, out), cat(previous labels, labels))
    kd       = T^2 * KL(softmax(previous out / T) || softmax(out_pre / T)), batchmean, previous out detached
    loss     = ce + alpha * kd                          # the first step of a run: CE(out) alone

Both run two SGD steps from the same weights on the same augmented images (captured from our trainer's forward
calls); the second step's loss and every parameter gradient must agree to float64 precision.
"""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from dlb_edu import models
from dlb_edu.config import TrainConfig
from dlb_edu.data import make_synthetic
from dlb_edu.train import Trainer


class TinyNet64(nn.Module):
    """A conv + BatchNorm + linear net that computes in float64 whatever its input's dtype."""

    def __init__(self, num_classes: int):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, 2, 1), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(6, num_classes)).double()

    def forward(self, x):
        return self.body(x.double())


def authors_step(model, optimizer, fresh, labels, prev, T, alpha):
    """One step of the authors' loop; ``prev`` is (images of the previous batch's second view, labels, out)."""
    out = model(fresh)
    if prev is None:
        loss = F.cross_entropy(out, labels)
    else:
        pre_images, pre_labels, pre_out = prev
        out_pre = model(pre_images)
        ce = F.cross_entropy(torch.cat((out_pre, out)), torch.cat((pre_labels, labels)))
        kd = F.kl_div(F.log_softmax(out_pre / T, dim=1), F.softmax(pre_out.detach() / T, dim=1),
                      reduction="batchmean") * T * T
        loss = ce + alpha * kd
    optimizer.zero_grad()
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    optimizer.step()
    return loss.detach(), grads, out.detach()


def test_paper_step_equals_the_authors_step_in_float64(monkeypatch):
    monkeypatch.setitem(models.ARCHS, "tiny64", TinyNet64)
    data = make_synthetic(num_classes=5, n_train=48, n_test=8, size=8)
    cfg = TrainConfig.from_preset("paper", method="dlb", arch="tiny64", batch_size=8, epochs=1, device="cpu",
                                  temperature=2.5, alpha=0.7)
    assert (cfg.forward, cfg.precision) == ("split", "fp32")
    trainer = Trainer(cfg, data=data, progress=False)
    reference = copy.deepcopy(trainer.model)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                              weight_decay=cfg.weight_decay)

    calls = []  # every forward call's input, in order
    trainer.model.register_forward_pre_hook(lambda m, args: calls.append(args[0].detach().clone()))
    batches = iter(trainer.sampler)
    prev = None
    for step in range(3):
        batch = next(batches)
        calls.clear()
        ours = trainer.train_step(batch, 0, step).loss
        our_grads = [p.grad.clone() for p in trainer.model.parameters()]
        labels = data.y_train[batch.fresh]
        if step == 0:
            assert batch.num_repeated == 0 and len(calls) == 1
        else:
            # Two calls, the fresh batch first, each half alone.
            assert [len(c) for c in calls] == [len(batch.fresh), batch.num_repeated]
        theirs, their_grads, out = authors_step(reference, ref_opt, calls[0], labels,
                                                None if prev is None else (calls[1], *prev), cfg.temperature,
                                                cfg.alpha)
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
        for g_ours, g_theirs in zip(our_grads, their_grads):
            torch.testing.assert_close(g_ours, g_theirs, rtol=1e-10, atol=1e-12)
        prev = (labels, out)
    # BatchNorm's running averages saw the same calls in the same order (fresh half first, then repeated).
    for ours_buf, theirs_buf in zip(trainer.model.buffers(), reference.buffers()):
        torch.testing.assert_close(ours_buf, theirs_buf, rtol=1e-12, atol=1e-12)
