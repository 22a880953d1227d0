"""The components some tests need, and the one way a test skips for lack of one.

Every skip of the suite goes through this registry: ``require("chromium")`` in a test or fixture, or the marker
``@pytest.mark.component("chromium")`` on a test or module (checked before its fixtures are set up). Locally a
missing component skips the test with the component's name and how to get it. Where ``TIML_REQUIRE_ALL=1``
(.ci/run sets it: CI has every component), a missing component fails the test instead, and so does any other skip
(a plain ``pytest.skip`` or a collection-time ``importorskip`` that bypassed the registry): a skip there would hide
a regression. Only components marked ``anywhere`` (a condition CI need not have, such as being offline) may skip
in CI. tests/test_ci_skips.py fakes each component missing and checks both sides.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from helpers import REPO, SHARED_ISIC

#: The environment variable (set by .ci/run) under which a missing component fails instead of skipping.
REQUIRE_ALL = "TIML_REQUIRE_ALL"


@dataclass(frozen=True)
class Component:
    """Something a test needs from the machine.

    Attributes:
        name: The name tests use (``require(name)``) and that the skip message starts with.
        probe: Returns True when the component is present (looked up on each use: tests fake it missing).
        remedy: How to get it, shown in the message.
        anywhere: True for a condition CI need not have: its absence skips even under TIML_REQUIRE_ALL=1.
    """

    name: str
    probe: Callable[[], bool]
    remedy: str
    anywhere: bool = False


def _chromium() -> bool:
    return bool(shutil.which("chromium") and shutil.which("chromedriver"))


def _postgresql() -> bool:
    sys.path.insert(0, str(REPO / "tests" / "cluster"))
    from components import postgres_bin

    return postgres_bin() is not None and shutil.which("runuser") is not None


def _network_namespaces() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    return probe.returncode == 0


def _mount_namespaces() -> bool:
    """A private mount namespace where a tmpfs can be mounted (the full-disk test's small real filesystem)."""
    import tempfile

    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory(prefix="timl-mount-") as folder:
        probe = subprocess.run(["unshare", "--mount", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs '{folder}'"],
                               capture_output=True, check=False)
    return probe.returncode == 0


def _gunicorn_reads_1kb() -> bool:
    """gunicorn before 27, whose request body reads 1 KB at a time (what the server's WholeReads is for)."""
    from timl.serving.connections import BODY_READS_1KB

    return BODY_READS_1KB


def _offline() -> bool:
    import socket

    try:
        socket.create_connection(("storage.googleapis.com", 443), timeout=2).close()
        return False
    except OSError:
        return True


COMPONENTS: dict[str, Component] = {component.name: component for component in (
    Component("chromium", _chromium, "Debian's chromium and chromium-driver (.ci/run installs them: "
              "apt-get install chromium chromium-driver)"),
    Component("postgresql", _postgresql, "PostgreSQL's server programs and runuser (.ci/run installs them: "
              "apt-get install postgresql)"),
    Component("network namespaces", _network_namespaces, "root and util-linux's unshare and iproute2's ip"),
    Component("mount namespaces", _mount_namespaces, "root and util-linux's unshare (a tmpfs in a private mount "
              "namespace)"),
    Component("dev full", lambda: Path("/dev/full").exists(), "/dev/full (every write to it fails as on a full "
              "disk)"),
    Component("isic sample", SHARED_ISIC.is_dir, f"the shared ISIC sample in {SHARED_ISIC}"),
    Component("tf-keras", lambda: importlib.util.find_spec("tf_keras") is not None,
              "the tf-keras package, to write Keras 2 files (make test installs it)"),
    Component("linux", lambda: sys.platform.startswith("linux"), "Linux: glibc's allocator and /proc"),
    Component("gunicorn before 27", _gunicorn_reads_1kb, "gunicorn 26, which MLflow's gunicorn<27 installs "
              "(gunicorn 27 reads a body in whole pieces itself, so the server leaves it)", anywhere=True),
    Component("offline", _offline, "a machine without a route to the internet (this checks the offline "
              "behaviour)", anywhere=True),
)}


def _required_everywhere() -> bool:
    return os.environ.get(REQUIRE_ALL) == "1"


def require(name: str) -> None:
    """Returns when the component is present; else skips the test (fails it where TIML_REQUIRE_ALL=1).

    Args:
        name: A key of COMPONENTS.

    Raises:
        KeyError: ``name`` is not a registered component.
    """
    component = COMPONENTS[name]
    if component.probe():
        return
    message = f"component '{name}' is missing: {component.remedy}"
    if _required_everywhere() and not component.anywhere:
        pytest.fail(f"Skipped where every component must be present ({REQUIRE_ALL}=1, set by .ci/run): {message}",
                    pytrace=False)
    pytest.skip(message)


def pytest_configure(config):
    config.addinivalue_line("markers", "component(name, ...): the test needs these components (tests/require_all.py)")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """The components named by the test's ``component`` markers, before any fixture is set up."""
    for mark in item.iter_markers("component"):
        for name in mark.args:
            require(name)


def _allowed_anywhere(reason: str) -> bool:
    return any(f"component '{name}' is missing" in reason for name, component in COMPONENTS.items()
               if component.anywhere)


def _refuse_skip(report) -> None:
    """Where TIML_REQUIRE_ALL=1, turns a skip that no ``anywhere`` component explains into a failure."""
    if not report.skipped or not _required_everywhere() or hasattr(report, "wasxfail"):
        return
    reason = str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr)
    if not _allowed_anywhere(reason):
        report.outcome = "failed"
        report.longrepr = (f"Skipped where every component must be present ({REQUIRE_ALL}=1, set by .ci/run): "
                           f"{reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _refuse_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """Collection-time skips (``importorskip``, ``pytest.skip(allow_module_level=True)``) too."""
    outcome = yield
    _refuse_skip(outcome.get_result())
