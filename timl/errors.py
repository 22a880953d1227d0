"""The TIML exception family.

Every user error is one of these, with a message that names the file, row, column or field at fault, says
what would be accepted, and ends with what was received. Each class also derives from the builtin a caller
would naturally catch (``ValueError``, ``FileNotFoundError``), so library users need not import this module.
"""


class TimlError(Exception):
    """Base class of every error TIML raises on purpose."""


class ConfigError(TimlError, ValueError):
    """A bad training table, table cell, option or configuration file."""


class DatasetError(TimlError, ValueError):
    """A ground-truth CSV, class column, split or image folder that cannot be used."""


class ImageError(TimlError, ValueError):
    """Bytes or a file that cannot be decoded as a supported image."""


class ModelError(TimlError, ValueError):
    """A model file, model URI, method, layer or weights that cannot be used."""


class MissingFileError(TimlError, FileNotFoundError):
    """A file the user named does not exist."""


class TrainingError(TimlError, RuntimeError):
    """Training of a row went wrong (NaN loss, no usable images)."""
