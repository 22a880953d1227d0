"""In CI (TIML_REQUIRE_ALL=1, set by .ci/run) a test skipped for lack of a component fails; locally it skips."""

from __future__ import annotations

pytest_plugins = ["pytester"]

INNER = '''
import pytest

def test_browser():
    pytest.skip("Debian's chromium and chromium-driver are not installed")

def test_isic():
    pytest.skip("the shared ISIC sample is not available")

def test_offline():
    pytest.skip("the network is reachable: this checks the offline behaviour")
'''


def _run(pytester, monkeypatch, required: bool):
    pytester.makeconftest("from require_all import pytest_runtest_makereport  # noqa: F401")
    pytester.makepyfile(test_inner=INNER)
    if required:
        monkeypatch.setenv("TIML_REQUIRE_ALL", "1")
    else:
        monkeypatch.delenv("TIML_REQUIRE_ALL", raising=False)
    return pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")


def test_component_skips_fail_in_ci(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, required=True)
    result.assert_outcomes(failed=2, skipped=1)  # the offline check may skip anywhere
    result.stdout.fnmatch_lines(["*TIML_REQUIRE_ALL=1*chromium*"])


def test_component_skips_stay_skips_locally(pytester, monkeypatch):
    _run(pytester, monkeypatch, required=False).assert_outcomes(skipped=3)
