import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import epoch_time  # noqa: E402

KEYS = {"arch", "method", "batch_size", "forward", "epoch_time_s_median", "peak_mem_bytes", "device", "torch",
        "git_rev", "command"}


def test_benchmark_writes_one_record_per_run_with_the_required_keys(tmp_path):
    out = tmp_path / "bench.json"
    epoch_time.main(["--dataset", "synthetic", "--archs", "small_cnn", "--batch-sizes", "64", "--forward", "joint",
                     "split", "--epochs", "2", "--device", "cpu", "--same-forward", "--out", str(out)])
    records = json.loads(out.read_text())
    assert [(r["method"], r["batch_size"], r["forward"]) for r in records] == [
        ("baseline", 64, "joint"), ("dlb", 64, "joint"), ("dlb", 64, "split"), ("baseline", 128, "joint")]
    for r in records:
        assert KEYS <= set(r)
        assert r["epoch_time_s_median"] > 0 and len(r["epoch_times_s"]) == 1  # the warm-up epoch is dropped
        assert r["peak_mem_bytes"] is None and r["device"] == "cpu"
