"""Values of T and alpha, good and bad, and what TrainConfig says of each: the table that DLB.set and the live lab's
set are held to (tests/test_config.py, tests/test_lab.py)."""
from dlb_edu.config import TrainConfig
from dlb_edu.errors import ConfigError

KNOB_VALUES = [("temperature", 0.005), ("temperature", 1e6), ("temperature", float("inf")), ("temperature", 0.0),
               ("temperature", -3.0), ("temperature", float("nan")), ("temperature", "3"), ("temperature", None),
               ("temperature", True), ("alpha", 1e39), ("alpha", -0.1), ("alpha", float("inf")), ("alpha", "1"),
               ("alpha", None), ("temperature", 0.01), ("temperature", 100), ("temperature", 3), ("alpha", 0),
               ("alpha", 4.0)]


def config_verdict(name, value):
    try:
        return "accepted", getattr(TrainConfig(**{name: value}), name)
    except ConfigError as e:
        return "refused", str(e)
