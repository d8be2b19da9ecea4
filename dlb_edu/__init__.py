"""dlb-edu: a teaching package for DLB, Self-Distillation from the Last Mini-Batch (Shen et al., CVPR 2022).

The modules, in the order a reader meets the idea: ``sampling`` (the overlapping batches), ``cache`` (the detached
logits of the last fresh half), ``losses`` (cross-entropy plus the temperature-scaled KL), ``data``, ``models``,
``train`` (one loop for the baseline and DLB), ``metrics``, ``viz`` and ``widgets`` (for the notebooks).
"""
from .cache import SoftTargetCache
from .errors import ConfigError, DataError, TrainingDiverged
from .losses import consistency_loss, dlb_loss
from .sampling import DLBBatchSampler

__version__ = "0.1.0"
__all__ = ["SoftTargetCache", "ConfigError", "DataError", "TrainingDiverged", "consistency_loss", "dlb_loss",
           "DLBBatchSampler", "__version__"]
