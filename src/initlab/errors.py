"""Exception types of initlab.

Every error a user can cause derives from :class:`InitlabError`, so callers can catch one type, and
the CLI can turn it into a one-line message with exit code 2 instead of a traceback. Messages name
the problem and say how to fix it.
"""
from __future__ import annotations


class InitlabError(Exception):
    """Base class of every error initlab raises on purpose."""


class RoleMapError(InitlabError):
    """A model (or part of one) cannot be mapped to parameter roles."""


class InitError(InitlabError):
    """An initialization scheme got arguments or a model it cannot handle."""


class ConfigError(InitlabError, ValueError):
    """A bad configuration value (width, heads, flags, hyperparameters)."""


class DataError(InitlabError):
    """A dataset is missing, truncated or in the wrong format."""


class CheckpointError(InitlabError):
    """A checkpoint is missing, corrupt or does not match the run."""


class TrainingError(InitlabError):
    """Training cannot go on (for example a NaN or inf loss)."""


class LockedError(InitlabError):
    """Another process is writing the same run directory (or ``--out``); the message names it."""


class Interrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM (its checkpoint is kept; resuming continues it).

    Like ``KeyboardInterrupt`` (which it subclasses), it is not an :class:`InitlabError`: the CLI
    exits with ``exit_code`` = 128 + the signal number (130 for SIGINT, 143 for SIGTERM), as shells
    and schedulers expect of a process stopped by that signal.
    """

    def __init__(self, signum: int = 2, message: str = ""):
        super().__init__(message)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
