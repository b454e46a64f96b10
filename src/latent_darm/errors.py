"""User-facing errors.

Every mistake a user can make (a bad checkpoint, a malformed data file, impossible sampler settings) raises a
subclass of :class:`DarmError` whose message is one line naming the culprit. The CLI prints that line and exits
non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class DarmError(Exception):
    """A problem with the user's input, reported as one line."""


class CheckpointError(DarmError):
    """A checkpoint directory is missing files, has a bad config, or its tensors do not fit the config."""


class ConfigError(DarmError):
    """Settings that cannot work together (e.g. gen_length not divisible by block_length)."""


class DataError(DarmError):
    """A data file or row is missing, unreadable or lacks a required field."""


class DiskFullError(DarmError):
    """A write failed for lack of space; the message says what was kept."""

    def __init__(self, message: str, path: object = None) -> None:
        super().__init__(message)
        self.path = path
