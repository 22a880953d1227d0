"""The output folder's lock: one table process at a time writes into an output folder.

Two ``python -m timl.train --resume`` processes on the same table and folder would train the same rows twice and
overwrite each other's checkpoints (``OUT/.backup/N``). :func:`output_folder_lock` holds an exclusive ``fcntl``
lock on ``OUT/.timl.lock`` for as long as the table runs; a second process refuses at once, naming the folder and
the process (pid, host) that holds it. The operating system drops the lock when its process ends, however it
ends (SIGKILL, power loss), so a stale lock file never blocks a later ``--resume``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path
from typing import Iterator

from timl.errors import ConfigError

#: The lock file in a table's output folder.
LOCK_NAME = ".timl.lock"


@contextlib.contextmanager
def output_folder_lock(out_dir: Path) -> Iterator[Path]:
    """Holds the output folder's lock while the ``with`` block runs; yields the lock file's path.

    Raises:
        ConfigError: another process holds the lock (the message names the folder and that process).
    """
    path = Path(out_dir) / LOCK_NAME
    handle = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ConfigError(f"The output folder {out_dir} is in use by {holder}: a table is training into it. "
                              f"Wait until it ends (or stop it), or give another --out-dir. Lock file: {path}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on host {socket.gethostname()}\n")
        handle.flush()
        yield path
    finally:
        handle.close()  # closing the file drops the lock
