"""User-facing errors.

Anything a user can cause (a missing dataset root, a corrupt frame, a checkpoint of the wrong shape,
a bad config value) is raised as a :class:`VosError`. The CLI prints its message as one line and exits
non-zero; library users catch it like any exception. Programming errors stay ordinary exceptions.
"""


class VosError(Exception):
    """An error caused by the user's input; its message is one self-contained line."""


class ConfigError(VosError):
    """A config file or override that does not fit the typed config."""


class DataError(VosError):
    """A dataset root, frame or mask that cannot be read or has the wrong layout."""


class CheckpointError(VosError):
    """A checkpoint that cannot be read or does not fit the model."""
