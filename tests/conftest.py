import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(min(2, torch.get_num_threads()))

# `pytest -m "not slow"` is the quick suite; these run real processes for minutes (a browser, every notebook in a
# kernel) and are marked here, beside the files that mark their own tests (kills, torchrun) with pytest.mark.slow.
SLOW_ELSEWHERE = ("test_browser.py::", "test_notebooks.py::test_notebook_runs_headless",
                  "test_notebooks.py::test_full_experiment")


def pytest_collection_modifyitems(items):
    for item in items:
        if any(pattern in item.nodeid for pattern in SLOW_ELSEWHERE):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def synthetic():
    """256 + 128 synthetic 16x16 images of 10 classes: an epoch of 8 steps of 32 in a fraction of a second."""
    from dlb_edu.data import make_synthetic
    return make_synthetic(n_train=256, n_test=128, size=16)
