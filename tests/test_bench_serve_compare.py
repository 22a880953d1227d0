"""``bench/serve_compare.py``: this checkout's server against another checkout's. The timed servers themselves
(minutes) are not run here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_another_checkout_without_timl_is_named(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "bench" / "serve_compare.py"), str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"{tmp_path} holds no timl package" in result.stderr
