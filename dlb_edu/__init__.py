"""dlb-edu: a teaching package for DLB, Self-Distillation from the Last Mini-Batch (Shen et al., CVPR 2022).

The modules, in the order a reader meets the idea: ``sampling`` (the overlapping batches), ``cache`` (the detached
logits of the last fresh half), ``losses`` (cross-entropy plus the temperature-scaled KL), ``data``, ``models`` (the
authors' networks), ``config`` (``TrainConfig``, every field's rule), ``train`` (one loop for the baseline and DLB),
``methods`` (DLB and the regularizers it is compared with), ``metrics``, and around them ``run_dir`` (a run's
folder), ``distributed``, ``epoch_stats``, ``seeds``, ``download``, ``reference`` (the committed results), ``smoke``,
``lab`` (the live training lab), ``viz`` and ``widgets`` (for the notebooks).
"""
from . import models as _models  # noqa: F401  (registers the package's networks in config.ARCHS)
from .cache import SoftTargetCache
from .errors import ConfigError, DataError, TrainingDiverged
from .losses import consistency_loss, dlb_loss
from .sampling import DLBBatchSampler

__version__ = "0.1.0"
__all__ = ["SoftTargetCache", "ConfigError", "DataError", "TrainingDiverged", "consistency_loss", "dlb_loss",
           "DLBBatchSampler", "__version__"]
