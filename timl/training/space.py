"""A disk that fills while a table trains: a clear error instead of a traceback, the finished rows kept.

A row that fills the disk fails like any row (its run says ``Disk full: ...``, :func:`timl.tracking.error_text`).
When the disk is still full as the table writes its results table, :func:`disk_full_stops_the_table` turns the
operating system's ``OSError`` (errno ENOSPC) into a :class:`~timl.errors.TrainingError` naming the file, so the
command says what to do (free space, then ``--resume``) and exits 2 without a traceback.
"""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path
from typing import Iterator

from timl.errors import TrainingError


@contextlib.contextmanager
def disk_full_stops_the_table(out_dir: str | Path | None) -> Iterator[None]:
    """Turns ``No space left on device`` inside the ``with`` block into a TrainingError.

    Raises:
        TrainingError: the disk is full (the message names the file being written and the output folder).
    """
    try:
        yield
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        where = f"while writing {error.filename}" if error.filename else f"in the output folder {out_dir}"
        raise TrainingError(f"No space left on the device {where}. The rows that FINISHED are kept "
                            f"(their runs, models and results); free space on that disk (or give another "
                            f"--out-dir / --checkpoint-dir), then continue with the same command plus "
                            f"--resume.") from error
