"""Our CS-KD step with ``forward="split"`` (the `paper` preset) is the authors' step: same loss, same gradients, same
BatchNorm updates.

The reference below is a transcription of the authors' training step (github:alinlab/cs-kd, ``train.py:95-105`` and
``131-148``), in float64, on a batch of ``B`` anchors followed by their ``B`` class pairs:

    outputs     = net(inputs[:B])                     # first call: the anchors, with gradient
    loss        = CE(outputs, targets[:B])
    with no_grad: outputs_cls = net(inputs[B:])       # second call: the pairs, no graph
    cls_loss    = KLDivLoss(sum)(log_softmax(outputs / T), softmax(outputs_cls / T)) * T^2 / B
    loss       += lambda * cls_loss

Both run three SGD steps from the same weights on the same augmented images (captured from our trainer's forward
calls); each step's loss and every parameter gradient, and in the end BatchNorm's running averages, must agree to
float64 precision.
"""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from dlb_edu import models
from dlb_edu.data import make_synthetic
from dlb_edu.config import TrainConfig
from dlb_edu.train import Trainer
from test_step_equivalence import TinyNet64  # the same float64 conv-BN net as DLB's step test


def authors_step(net, optimizer, inputs, targets, temp, lamda):
    """One step of the authors' loop with ``-cls``: ``inputs`` are the anchors, then their pairs."""
    batch_size = inputs.size(0)
    targets_ = targets[:batch_size // 2]
    outputs = net(inputs[:batch_size // 2])
    loss = torch.mean(F.cross_entropy(outputs, targets_))
    with torch.no_grad():
        outputs_cls = net(inputs[batch_size // 2:])
    log_p = torch.log_softmax(outputs / temp, dim=1)
    q = torch.softmax(outputs_cls.detach() / temp, dim=1)
    cls_loss = F.kl_div(log_p, q, reduction="sum") * (temp ** 2) / outputs.size(0)
    loss = loss + lamda * cls_loss
    optimizer.zero_grad()
    loss.backward()
    grads = [p.grad.clone() for p in net.parameters()]
    optimizer.step()
    return loss.detach(), grads


def test_cs_kd_split_step_equals_the_authors_two_calls_in_float64(monkeypatch):
    monkeypatch.setitem(models.ARCHS, "tiny64", TinyNet64)
    data = make_synthetic(num_classes=4, n_train=48, n_test=8, size=8)
    cfg = TrainConfig.from_preset("paper", method="cs_kd", arch="tiny64", batch_size=8, epochs=1, device="cpu",
                                  cskd_temperature=2.5, cskd_lambda=0.7)
    assert (cfg.forward, cfg.precision) == ("split", "fp32")
    trainer = Trainer(cfg, data=data, progress=False)
    reference = copy.deepcopy(trainer.model)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                              weight_decay=cfg.weight_decay)

    calls = []  # every forward call: its input, and whether it builds a graph
    trainer.model.register_forward_pre_hook(
        lambda m, args: calls.append((args[0].detach().clone(), torch.is_grad_enabled())))
    batches = iter(trainer.sampler)
    for step in range(3):
        batch = next(batches)
        assert (data.y_train[batch.anchors] == data.y_train[batch.pairs]).all()
        calls.clear()
        ours = trainer.train_step(batch, 0, step).loss
        our_grads = [p.grad.clone() for p in trainer.model.parameters()]
        # Two calls: the anchors with gradient, then the pairs without.
        assert [(len(x), grad) for x, grad in calls] == [(8, True), (8, False)]
        inputs = torch.cat([calls[0][0], calls[1][0]])
        if step == 0:  # one call on both groups would have normalized them together: the test can tell
            joint = copy.deepcopy(reference)(inputs)[:8]
            assert not torch.allclose(joint, copy.deepcopy(reference)(calls[0][0]), rtol=1e-6, atol=1e-6)
        theirs, their_grads = authors_step(reference, ref_opt, inputs, data.y_train[batch], cfg.cskd_temperature,
                                           cfg.cskd_lambda)
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
        for g_ours, g_theirs in zip(our_grads, their_grads):
            torch.testing.assert_close(g_ours, g_theirs, rtol=1e-10, atol=1e-12)
    # BatchNorm's running averages saw the same calls in the same order (anchors, then pairs), six updates.
    for (name, ours_buf), theirs_buf in zip(trainer.model.named_buffers(), reference.buffers()):
        torch.testing.assert_close(ours_buf, theirs_buf, rtol=1e-12, atol=1e-12)
        if name.endswith("num_batches_tracked"):
            assert ours_buf.item() == 6
