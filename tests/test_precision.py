"""The device-dependent settings, checked on a CPU with the GPU faked: the precision policy by CUDA capability
(config.resolve_precision), fp16 with its GradScaler (trained for real on the CPU, resumed to the bit), each process's
own GPU under torchrun (config.resolve_device), the cuDNN and determinism switches (train._set_backend_flags), what
summary.json records of them, and the global pooling that has a deterministic CUDA backward (models.global_avg_pool)."""
import json
import os

import pytest
import torch
import torch.nn.functional as F

from dlb_edu import config, models
from dlb_edu.config import PRESETS, TrainConfig, resolve_device, resolve_precision
from dlb_edu.data import make_synthetic
from dlb_edu.errors import ConfigError
from dlb_edu.train import Trainer, _backend_flags, _set_backend_flags
from resume_checks import assert_same_run, interrupted_then_resumed

CUDA = torch.device("cuda")


@pytest.fixture
def fake_gpu(monkeypatch):
    """CUDA 'available' with a settable capability and device count; nothing here ever touches a real GPU."""
    gpu = {"capability": (9, 0), "count": 1}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpu["count"])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: gpu["capability"])
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    return gpu


@pytest.fixture
def global_flags(monkeypatch):
    """Restore the process-wide switches _set_backend_flags sets (cuDNN, determinism, threads, cuBLAS's variable)."""
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "unset-by-test")  # so that monkeypatch restores the real value
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    yield
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[0], saved[1]
    torch.use_deterministic_algorithms(saved[2])
    torch.set_num_threads(saved[3])


def tiny(**overrides):
    base = dict(dataset="synthetic", arch="small_cnn", method="dlb", epochs=2, batch_size=4, device="cpu",
                probe_size=8)
    return TrainConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def tiny8():
    """16 + 8 images of 8x8 (small_cnn's smallest): fp16 convolutions are slow on a CPU, so keep them few."""
    return make_synthetic(n_train=16, n_test=8, size=8)


def fp16(**overrides):
    return tiny(precision="fp16", **overrides)


def fp32(**overrides):
    return tiny(precision="fp32", **overrides)


# ---------------------------------------------------------------------------------------------------------------
# Precision
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("capability,expected", [((9, 0), "bf16"), ((8, 0), "bf16"), ((8, 6), "bf16"),
                                                 ((7, 5), "fp16"), ((7, 0), "fp16"), ((6, 1), "fp32")])
def test_auto_precision_follows_the_cuda_capability(fake_gpu, capability, expected):
    # H200/H100 9.0 and A100 8.0 compute bf16 natively; T4 7.5 and V100 7.0 do not (fp16 + GradScaler); P100 6.x.
    fake_gpu["capability"] = capability
    assert resolve_precision("auto", CUDA) == expected
    assert resolve_precision("auto", torch.device("cuda", 0)) == expected


@pytest.mark.parametrize("native,expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_a_cpu_is_bf16_only_where_the_cpu_has_it_natively(monkeypatch, native, expected):
    monkeypatch.setattr(config, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", torch.device("cpu")) == expected


@pytest.mark.parametrize("requested", ["bf16", "fp16", "fp32"])
def test_an_explicit_precision_is_taken_as_it_is_on_every_device(fake_gpu, monkeypatch, requested):
    monkeypatch.setattr(config, "cpu_has_native_bf16", lambda: False)
    for capability in ((9, 0), (7, 5), (6, 1)):
        fake_gpu["capability"] = capability
        assert resolve_precision(requested, CUDA) == requested
    assert resolve_precision(requested, torch.device("cpu")) == requested


def test_the_paper_preset_stays_fp32_and_the_short_presets_choose_by_device():
    assert PRESETS["paper"]["precision"] == "fp32"  # as the authors' code computes
    assert PRESETS["quick"]["precision"] == PRESETS["cpu"]["precision"] == TrainConfig().precision == "auto"
    assert TrainConfig.from_preset("paper").precision == "fp32"


def test_the_trainer_autocasts_as_the_policy_says(monkeypatch, tiny8):
    for native, dtype in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(config, "cpu_has_native_bf16", lambda native=native: native)
        trainer = Trainer(tiny(), data=tiny8, progress=False)
        assert trainer.amp_dtype == dtype and not trainer.scaler.is_enabled()
        with trainer._autocast():
            out = trainer.model(torch.zeros(2, 3, 8, 8).contiguous(memory_format=trainer.memory_format))
        assert out.dtype == (dtype or torch.float32)


# ---------------------------------------------------------------------------------------------------------------
# fp16 with a GradScaler, trained on the CPU (CPU autocast and GradScaler("cpu") support float16)
# ---------------------------------------------------------------------------------------------------------------

def test_fp16_trains_with_a_grad_scaler_whose_state_is_in_the_checkpoint(tiny8, tmp_path):
    trainer = Trainer(fp16(), data=tiny8, out_dir=tmp_path, progress=False)
    assert trainer.precision == "fp16" and trainer.amp_dtype == torch.float16 and trainer.scaler.is_enabled()
    scales = []
    for _ in trainer.epochs(lambda t, loss: scales.append(t.scaler.get_scale())):
        pass
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["scaler"]
    # GradScaler's rule, updated once per step: the scale halves at each step whose gradients overflowed (that step
    # is skipped), and the growth tracker counts the steps since the last overflow (growth comes after 2,000).
    backoffs = [i for i, s in enumerate(scales) if s < (scales[i - 1] if i else 2.0 ** 16)]
    assert len(scales) == 2 * len(trainer.sampler) == 8
    assert state["scale"] == scales[-1] == 2.0 ** (16 - len(backoffs))
    assert state["_growth_tracker"] == len(scales) - 1 - (backoffs[-1] if backoffs else -1)
    assert all(torch.isfinite(t).all() for t in trainer.model.state_dict().values() if t.is_floating_point())
    assert json.loads((tmp_path / "summary.json").read_text())["precision"] == "fp16"


def test_fp16_resumed_mid_run_ends_bit_for_bit_where_the_uninterrupted_run_ends(tiny8, tmp_path):
    cfg = fp16(checkpoint_every=1)
    whole = Trainer(cfg, data=tiny8, out_dir=tmp_path / "whole", progress=False)
    whole.run()
    resumed = interrupted_then_resumed(cfg, tiny8, tmp_path / "resumed", stop_after_steps=6)  # epoch 2, step 2 of 4
    assert_same_run(whole, resumed)
    assert resumed.scaler.state_dict() == whole.scaler.state_dict()  # growth tracker carried over, not restarted


def test_a_checkpoint_without_scaler_state_still_loads(tiny8, tmp_path):
    Trainer(fp32(epochs=1), data=tiny8, out_dir=tmp_path, progress=False).run()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["scaler"] == {}  # the scaler is off outside fp16
    del state["scaler"]  # as a checkpoint written before fp16 existed
    torch.save(state, tmp_path / "checkpoint.pt")
    resumed = Trainer(fp32(epochs=2), data=tiny8, out_dir=tmp_path, resume=True, progress=False)
    assert len(resumed.history) == 1
    resumed.run()
    assert len(resumed.history) == 2


# ---------------------------------------------------------------------------------------------------------------
# Devices under torchrun
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("written", ["auto", "cuda", "cuda:0", "cuda:3"])
def test_under_torchrun_each_process_takes_its_local_rank_gpu_whatever_index_was_written(fake_gpu, monkeypatch,
                                                                                         written):
    fake_gpu["count"] = 4
    monkeypatch.setenv("WORLD_SIZE", "4")
    for rank in range(4):
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        assert resolve_device(written) == torch.device("cuda", rank)


def test_in_one_process_the_written_gpu_is_used(fake_gpu):
    fake_gpu["count"] = 4
    assert resolve_device("cuda:3") == torch.device("cuda", 3)
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("auto") == torch.device("cuda")


def test_under_torchrun_a_cpu_run_stays_on_the_cpu(fake_gpu, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_local_rank_beyond_the_gpus_is_refused_in_one_line(fake_gpu, monkeypatch):
    fake_gpu["count"] = 2
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(ConfigError, match=r"'cuda:2' asked for, but there are 2 CUDA devices"):
        resolve_device("cuda:0")


def test_cuda_without_a_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available here"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


# ---------------------------------------------------------------------------------------------------------------
# cuDNN, TF32 and determinism
# ---------------------------------------------------------------------------------------------------------------

def test_a_cuda_run_turns_cudnn_autotuning_on(global_flags):
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    _set_backend_flags(CUDA, TrainConfig())
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    assert not torch.are_deterministic_algorithms_enabled()
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_a_deterministic_cuda_run_asks_for_deterministic_kernels_everywhere(global_flags):
    _set_backend_flags(CUDA, TrainConfig(deterministic=True))
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    assert torch.are_deterministic_algorithms_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_a_deterministic_run_does_not_leave_the_next_run_deterministic(global_flags):
    _set_backend_flags(CUDA, TrainConfig(deterministic=True))
    _set_backend_flags(CUDA, TrainConfig())  # the next run of the same process (a notebook, compare)
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    assert torch.backends.cudnn.benchmark


def test_a_cpu_run_leaves_cudnn_alone_and_sets_its_threads(global_flags):
    torch.backends.cudnn.benchmark = False
    _set_backend_flags(torch.device("cpu"), TrainConfig(threads=1))
    assert torch.get_num_threads() == 1 and not torch.backends.cudnn.benchmark


def test_the_recorded_flags_are_the_ones_in_force_on_cuda(global_flags):
    _set_backend_flags(CUDA, TrainConfig())
    flags = _backend_flags(CUDA)
    assert flags == {"tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                     "tf32_cudnn": torch.backends.cudnn.allow_tf32, "cudnn_benchmark": True,
                     "deterministic_algorithms": False}
    assert flags["tf32_matmul"] is False and flags["tf32_cudnn"] is True  # PyTorch's defaults, which we keep


def test_summary_json_records_the_precision_layout_threads_and_switches(monkeypatch, tiny8, tmp_path,
                                                                         global_flags):
    monkeypatch.setattr(config, "cpu_has_native_bf16", lambda: True)
    Trainer(tiny(epochs=1, threads=1, channels_last="off"), data=tiny8, out_dir=tmp_path, progress=False).run()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {k: summary[k] for k in ("device", "precision", "channels_last", "threads", "tf32_matmul", "tf32_cudnn",
                                    "cudnn_benchmark", "deterministic_algorithms")} == {
        "device": "cpu", "precision": "bf16", "channels_last": False, "threads": 1, "tf32_matmul": None,
        "tf32_cudnn": None, "cudnn_benchmark": None, "deterministic_algorithms": False}


# ---------------------------------------------------------------------------------------------------------------
# Global pooling: deterministic on CUDA, unchanged on the CPU
# ---------------------------------------------------------------------------------------------------------------

def _pooled(pool, x, grad_out):
    x = x.detach().clone().requires_grad_()
    y = pool(x)
    y.backward(grad_out)
    return y, x.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_global_pooling_on_a_cpu_is_adaptive_pooling_to_the_bit(dtype, layout):
    # The CPU results in results/ were computed with adaptive_avg_pool2d; the fixed-kernel pool rounds differently
    # here (the second check), so the CPU keeps the adaptive one.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 128, 4, 4, generator=g).relu().to(dtype).contiguous(memory_format=layout)
    grad_out = torch.randn(64, 128, 1, 1, generator=g).to(dtype)
    got, ref = _pooled(models.global_avg_pool, x, grad_out), _pooled(lambda t: F.adaptive_avg_pool2d(t, 1), x,
                                                                        grad_out)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    if dtype == torch.float32 and layout == torch.contiguous_format:
        assert not torch.equal(_pooled(models.fixed_kernel_avg_pool, x, grad_out)[0], ref[0])


@pytest.mark.parametrize("shape", [(5, 7, 4, 4), (3, 2, 8, 8), (2, 3, 3, 5), (4, 6, 1, 1)])
def test_the_fixed_kernel_pool_used_on_cuda_is_the_mean_of_each_map(shape):
    g = torch.Generator().manual_seed(1)
    x, grad_out = torch.randn(*shape, generator=g), torch.randn(shape[0], shape[1], 1, 1, generator=g)
    y, grad = _pooled(models.fixed_kernel_avg_pool, x, grad_out)
    area = shape[2] * shape[3]
    torch.testing.assert_close(y.double(), x.double().mean((2, 3), keepdim=True), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad.double(), (grad_out.double() / area).expand(shape), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("arch", ["resnet32", "resnet32_option_a", "densenet40_12", "small_cnn"])
def test_every_network_with_global_pooling_uses_the_one_rule(arch, monkeypatch):
    calls = []
    monkeypatch.setattr(models, "fixed_kernel_avg_pool", lambda x: calls.append(x.shape) or x.mean((2, 3), True))
    model = models.build_model(arch).eval()
    model(torch.zeros(2, 3, 32, 32))
    assert calls == []  # a CPU tensor: adaptive pooling
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    model(torch.zeros(2, 3, 32, 32))
    assert len(calls) == 1 and calls[0][-2:] != (1, 1)
