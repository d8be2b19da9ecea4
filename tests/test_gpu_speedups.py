"""The GPU speed-ups' pieces that a CPU can check (``gpu_speedups``: channels_last; ``precision="bf16"``: autocast):
they change only float noise."""
import torch

from dlb_edu.augment import normalize, random_crop_flip
from dlb_edu.data import make_synthetic
from dlb_edu.models import build_model


def test_channels_last_gives_the_same_logits():
    torch.manual_seed(0)
    model = build_model("resnet32").eval()
    x = torch.randn(8, 3, 32, 32)
    ref = model(x)
    model = model.to(memory_format=torch.channels_last)
    got = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_bf16_autocast_logits_and_dlb_loss_agree_with_fp32_to_bf16_precision():
    from dlb_edu.losses import dlb_loss
    torch.manual_seed(0)
    model = build_model("resnet32").train()
    data = make_synthetic()
    x = normalize(random_crop_flip(data.x_train[:64], generator=torch.Generator().manual_seed(0)), data.mean,
                  data.std)
    y = data.y_train[:64]
    ref = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = model(x)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), ref, rtol=0.05, atol=0.05)
    cached = ref[32:].detach() + 0.1
    loss_ref = dlb_loss(ref, y, cached[:32])[0]
    loss_half = dlb_loss(half, y, cached[:32])[0]  # the loss itself is computed in float32
    assert loss_half.dtype == torch.float32
    torch.testing.assert_close(loss_half, loss_ref, rtol=0.02, atol=0.02)


def test_batched_augmentation_is_the_same_whatever_the_memory_layout():
    data = make_synthetic()
    x = data.x_train[:16]
    a = random_crop_flip(x, generator=torch.Generator().manual_seed(3))
    b = random_crop_flip(x.contiguous(memory_format=torch.channels_last), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
