"""User-facing errors: one line, naming the thing and how to fix it. The CLI prints them without a traceback."""


class BenchError(Exception):
    """An error caused by input the user can fix. ``exit_code`` 2 = bad usage, 1 = failed run."""

    exit_code = 1


class UsageError(BenchError):
    exit_code = 2


class DataError(BenchError):
    """A data file is missing, corrupt or unreadable."""


class TrainingError(BenchError):
    """Training diverged (NaN/inf loss) or could not proceed."""


class NotFittedError(BenchError):
    """A method was used before ``fit`` or ``load_state_dict``."""


class DiskFullError(BenchError):
    """A write failed because the disk (or the user's quota) holding a folder is full."""
