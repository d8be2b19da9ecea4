"""The one exception type for bad user input.

Every user-facing entry (CLI, public functions, widgets) raises ``ConfigError`` with a one-line message that names
the parameter and what is allowed. The CLI turns it into that line on stderr and exit code 2, with no traceback.
"""


class ConfigError(ValueError):
    """A bad value from the user: the message is one line and says what is allowed."""


class DataError(ConfigError):
    """A data set that is missing or malformed: the message says how to get or fix it."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""
