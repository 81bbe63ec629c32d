"""Exceptions that carry a message meant for the person running bloomseg."""


class BloomsegError(Exception):
    """Base class: the message names the file and what is wrong with it."""


class WeightsError(BloomsegError):
    """A weights file is missing, unreadable, unsafe or of the wrong architecture."""


class DownloadError(WeightsError):
    """A weights download failed; the message says how to get the file by hand."""


class ImageError(BloomsegError):
    """An image file cannot be read or has a form bloomseg cannot use."""


class DataError(BloomsegError):
    """A dataset folder, mask, box file or split file is missing or inconsistent."""


class CheckpointError(BloomsegError):
    """A model checkpoint is unreadable, not bloomseg's, or needs another backbone."""


class ConfigError(BloomsegError):
    """A setting is invalid (out of its range, or not fitting the others), or a run folder
    is not in the state asked for. The command line exits 2 for it."""


class OutputError(BloomsegError):
    """An output file cannot be written (disk full, no permission, read-only folder)."""


class OutputExistsError(OutputError):
    """An output is there already and ``--overwrite`` was not given."""
