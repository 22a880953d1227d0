"""Run by the chaos test in place of ``python -m timl.train``: the real command, with the checkpoint's rename
delayed while ``TIML_CHAOS_SLOW_CHECKPOINT`` names a marker file, so a kill can land while a checkpoint is being
written (the file written aside and not yet renamed into place): the one moment too short to hit by polling.

    python tests/chaos_hooks.py --input-table T.csv ...
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def _slow_checkpoints(marker: Path) -> None:
    from timl.training import callbacks

    write = callbacks.write_npz

    def slowly(path: Path, arrays: dict) -> None:
        if Path(path).name != "last.npz":
            return write(path, arrays)
        partial = Path(path).with_name(f"{Path(path).stem}-partial.npz")
        original_replace = Path.replace

        def replace_later(self, target):
            if self == partial:
                marker.write_text(str(partial))  # the partial file is complete, the rename has not happened
                time.sleep(3)
            return original_replace(self, target)

        Path.replace = replace_later
        try:
            write(path, arrays)
        finally:
            Path.replace = original_replace

    callbacks.write_npz = slowly


if __name__ == "__main__":
    if os.environ.get("TIML_CHAOS_SLOW_CHECKPOINT"):
        _slow_checkpoints(Path(os.environ["TIML_CHAOS_SLOW_CHECKPOINT"]))
    from timl.train import cli

    sys.argv[0] = "timl.train"
    cli()
