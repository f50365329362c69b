"""The zoo's error classes: one base, :class:`ZooError`, that carries the exit status a
command returns for it.

Each class also derives from the built-in exception it was before (``ValueError``,
``RuntimeError``, ``OSError``), so ``except ValueError`` in user code keeps catching it. A
command catches ``ZooError`` alone, prints ``<command>: error: <message>`` without a
traceback and exits with ``exc.exit_code``.
"""

from __future__ import annotations

__all__ = ["ZooError", "ConfigError", "CheckpointError", "DataFileError", "DataNotFoundError",
           "WeightsError", "WeightsFileNotFoundError"]


class ZooError(Exception):
    """Bad input a user can fix (a config, a checkpoint, a data or weights file); the message
    names it, what was expected and the fix. ``exit_code`` is the commands' exit status."""

    exit_code: int = 2


class ConfigError(ZooError, ValueError):
    """A config file, key or value is invalid; the message names it and the fix."""


class CheckpointError(ZooError, RuntimeError):
    """A checkpoint is missing, corrupt, or belongs to another model/config."""


class DataFileError(ZooError, OSError):
    """A dataset file is missing, cannot be decoded, or does not agree with its partner.

    The message always names the path(s) involved and the fix.
    """


class DataNotFoundError(ZooError, FileNotFoundError):
    """A dataset folder, split or the pairs of a split are not where the config says."""


class WeightsError(ZooError, ValueError):
    """A weights file cannot be read, or does not fit the model it is loaded into.

    The message names the file (when there is one), the offending keys and the fix.
    """


class WeightsFileNotFoundError(WeightsError, FileNotFoundError):
    """The weights file does not exist (nothing is ever downloaded in its place)."""
