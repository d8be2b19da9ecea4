"""benchmarks/gpu_check.py works before a GPU is lent: ``--dry-run`` runs every part on the CPU, as real processes,
and writes the records a GPU run will write; the authors' script is run through our runner (here a stand-in that
reads our pickles as their loader does); the pickles hold the images in the layout their loader expects."""
import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from dlb_edu.data import make_synthetic
from dlb_edu.config import METHODS

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402

# A stand-in for the authors' dlb.py: it needs the torch._six shim, reads the pickles as their my_dataloader.py does
# and prints one "epoch:N ..." line per epoch, as theirs does with --print_freq 1.
FAKE_AUTHORS = textwrap.dedent("""
    import argparse, os, pickle, sys
    import numpy as np
    import torch
    assert torch._six.string_classes == (str, bytes)
    p = argparse.ArgumentParser()
    for name in ("--model_names", "--root", "--dataset", "--classes_num", "--T", "--alpha", "--batch_size", "--epoch",
                 "--lr", "--print_freq", "--num_workers"):
        p.add_argument(name)
    p.add_argument("--milestones", nargs="+")
    args = p.parse_args()
    folder = os.path.join(args.root, "cifar-10-batches-py")
    rows = [pickle.load(open(os.path.join(folder, f"data_batch_{i}"), "rb"), encoding="latin1") for i in range(1, 6)]
    x = np.vstack([r["data"] for r in rows]).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))
    for epoch in range(int(args.epoch)):
        print("epoch:{} model:{} train loss:1.00 acc:{:.2f}  val loss1.00 acc:10.00\\n".format(
            epoch, args.model_names, float(x.mean())))
    print("model:{} best acc:10.00".format(args.model_names))
""")


def read_as_the_authors_do(root: Path):
    folder = root / "cifar-10-batches-py"
    rows = [pickle.load(open(folder / f"data_batch_{i}", "rb"), encoding="latin1") for i in range(1, 6)]
    x = np.vstack([r["data"] for r in rows]).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))  # to HWC
    y = [label for r in rows for label in r["labels"]]
    test = pickle.load(open(folder / "test_batch", "rb"), encoding="latin1")
    classes = pickle.load(open(folder / "batches.meta", "rb"), encoding="latin1")["label_names"]
    return x, y, np.asarray(test["data"]).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1)), test["labels"], classes


def test_the_authors_pickles_hold_our_images_in_their_layout(tmp_path):
    data = make_synthetic(n_train=23, n_test=7)
    gpu_check.write_authors_pickles(data, tmp_path)
    x, y, x_test, y_test, classes = read_as_the_authors_do(tmp_path)
    assert np.array_equal(x, data.x_train.permute(0, 2, 3, 1).numpy())
    assert np.array_equal(x_test, data.x_test.permute(0, 2, 3, 1).numpy())
    assert y == data.y_train.tolist() and y_test == data.y_test.tolist() and classes == list(data.classes)


def test_shuffling_keeps_every_image_with_its_label():
    data = make_synthetic(n_train=40, n_test=20)
    mixed = gpu_check.shuffled(data)
    assert not torch.equal(mixed.y_train, data.y_train)
    for x, y, x_ref, y_ref in ((mixed.x_train, mixed.y_train, data.x_train, data.y_train),
                               (mixed.x_test, mixed.y_test, data.x_test, data.y_test)):
        order = [next(j for j in range(len(x_ref)) if torch.equal(x_ref[j], img)) for img in x]
        assert sorted(order) == list(range(len(x_ref))) and torch.equal(y_ref[order], y)


@pytest.mark.slow
def test_dry_run_writes_every_part_s_records_on_the_cpu(tmp_path):
    authors = tmp_path / "DLB"
    authors.mkdir()
    (authors / "dlb.py").write_text(FAKE_AUTHORS)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out),
                           "--authors", str(authors)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert (out / "gpu_check.log").is_file()
    meta = report["meta"]
    assert meta["dry_run"] and meta["torch"] == torch.__version__ and "gpu_check.py --dry-run" in meta["command"]
    status = {p["part"]: p["status"] for p in report["parts"]}
    assert status == {"data": "ok", "epoch_times": "ok", "authors": "ok", "resume": "ok", "paper_runs": "ok",
                      "precision": "ok", "compiled": "skipped", "notebooks": "skipped"}, report["parts"]
    records = {p["part"]: p.get("records", []) for p in report["parts"]}
    for recs in records.values():
        for r in recs:
            assert {"device", "torch", "git_rev", "command", "part", "kind"} <= set(r) and "error" not in r, r

    sizes = gpu_check.SIZES["dry"]
    times = {(r["method"], r["batch_size"], r["forward"]): r for r in records["epoch_times"]}
    b = sizes["b"]
    assert set(times) == {("baseline", sizes["batch_sizes"][0], "joint"), ("baseline", sizes["batch_sizes"][1],
                                                                           "joint"),
                          ("dlb", b, "split"), ("dlb", b, "joint")}
    for (method, batch_size, _), r in times.items():
        assert r["arch"] == sizes["arch"] and r["train_images"] == sizes["train"]
        assert len(r["epoch_times_s"]) == sizes["epochs"] - sizes["warmup"] and r["epoch_time_s_median"] > 0
        assert len(r["warmup_times_s"]) == sizes["warmup"] and r["peak_mem_bytes"] is None  # a CPU
        assert r["samples_per_step"] == (2 if method == "dlb" else 1) * batch_size
        assert r["precision"] in ("bf16", "fp32") and r["compile"] is False

    (authors_rec,) = records["authors"]
    assert authors_rec["kind"] == "authors_epoch_time"
    assert len(authors_rec["epoch_times_s"]) == sizes["authors_epochs"] - 1  # from one epoch's end to the next
    (resume,) = records["resume"]
    assert resume["deterministic"] and resume["weights_bitwise_equal"] and resume["history_equal"]
    assert resume["resumed_from"]["epoch"] == 1 and resume["resumed_from"]["step"] > 0  # inside the second epoch
    runs = {r["method"]: r for r in records["paper_runs"]}
    assert set(runs) == set(METHODS)
    assert all(r["summary"]["precision"] == "fp32" and r["summary"]["epochs"] == 2 for r in runs.values())
    assert [r["precision"] for r in records["precision"]] == ["fp32", "fp16"]


@pytest.mark.slow
def test_a_part_over_its_cap_is_killed_with_its_children_and_the_call_goes_on(tmp_path, monkeypatch):
    # The authors' "script" hangs in a grandchild process: its part is cut at its cap, its error recorded, the
    # whole process group killed, and the next part still runs.
    authors, pid_file = tmp_path / "DLB", tmp_path / "pid"
    authors.mkdir()
    (authors / "dlb.py").write_text(f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
                                    "time.sleep(600)\n")
    monkeypatch.setattr(gpu_check, "PARTS", [("authors", 60, 25), ("compiled", 60, 10)])
    report = gpu_check.main(["--dry-run", "--out", str(tmp_path / "out"), "--authors", str(authors)])
    hung, after = report["parts"]
    assert hung["status"] == "timeout" and "killed" in hung["error"] and after["status"] == "skipped"
    assert json.loads((tmp_path / "out" / "gpu_check.json").read_text())["parts"][0]["status"] == "timeout"
    pid = int(pid_file.read_text())
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_the_data_copy_is_found_inside_its_tar_gz_and_loads(tmp_path):
    from PIL import Image

    from dlb_edu.data import load_image_folder
    src = tmp_path / "src" / "cifar10-jpeg"
    for split in ("train", "test"):
        for k, cls in enumerate(("cat", "dog")):
            (src / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (32, 32), (40 * k + i, 0, 0)).save(src / split / cls / f"{i:04d}.jpg")
    archive = tmp_path / "cifar10-jpeg.tar.gz"
    subprocess.run(["tar", "-czf", str(archive), "-C", str(src.parent), "cifar10-jpeg"], check=True)
    work = tmp_path / "work"
    work.mkdir()
    folder = gpu_check.image_folder_in(archive, work)
    assert folder == work / "extracted" / "cifar10-jpeg"
    assert gpu_check.image_folder_in(src, work) == src  # an extracted folder is taken as it is
    data = load_image_folder(folder)
    assert data.classes == ("cat", "dog") and len(data.x_train) == len(data.x_test) == 4
