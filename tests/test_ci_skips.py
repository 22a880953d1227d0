"""Every skip of the suite goes through the component registry (tests/require_all.py): locally a missing
component skips with its name; in CI (TIML_REQUIRE_ALL=1, set by .ci/run) it fails, and so does any skip that
bypassed the registry (a plain ``pytest.skip``, a collection-time ``importorskip``)."""

from __future__ import annotations

import ast
import re

import pytest

import require_all
from helpers import REPO
from require_all import COMPONENTS, require

pytest_plugins = ["pytester"]

#: Where the suite may name pytest's skip functions: the registry itself.
REGISTRY = REPO / "tests" / "require_all.py"
SKIP_CALL = re.compile(r"pytest\.(skip\(|importorskip\(|mark\.skip)|\bimportorskip\(|\bskipif\(")


def _suite_files():
    return sorted(path for path in (REPO / "tests").rglob("*.py") if path != REGISTRY)


def _names_the_suite_requires() -> set[str]:
    """Every component name passed to require(...) or pytest.mark.component(...) in the suite."""
    found = set()
    for path in _suite_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                called = ast.unparse(node.func)
                if called in ("require", "pytest.mark.component", "require_all.require"):
                    found |= {argument.value for argument in node.args if isinstance(argument, ast.Constant)}
    return found


def test_no_test_skips_outside_the_registry():
    """A skip written elsewhere would not say which component is missing, nor fail in CI at the test itself."""
    offenders = [f"{path.relative_to(REPO)}:{number}: {line.strip()}" for path in _suite_files()
                 if path.name != "test_ci_skips.py"
                 for number, line in enumerate(path.read_text().splitlines(), 1) if SKIP_CALL.search(line)]
    assert not offenders, "skip through tests/require_all.py (require(name) or pytest.mark.component):\n" + \
        "\n".join(offenders)


def test_the_suite_names_only_registered_components_and_uses_each():
    assert _names_the_suite_requires() == set(COMPONENTS)


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_a_missing_component_fails_in_ci_and_skips_locally(name, monkeypatch):
    """Each component faked missing (its probe monkeypatched): under TIML_REQUIRE_ALL=1 require() fails the test,
    naming the component (an ``anywhere`` component, a condition CI need not have, still skips); locally it skips
    with the component's name."""
    component = COMPONENTS[name]
    monkeypatch.setitem(COMPONENTS, name, type(component)(name, lambda: False, component.remedy, component.anywhere))
    monkeypatch.setenv(require_all.REQUIRE_ALL, "1")
    outcome, message = _outcome(name)
    assert outcome == ("skipped" if component.anywhere else "failed"), message
    assert f"component '{name}' is missing: {component.remedy}" in message
    monkeypatch.delenv(require_all.REQUIRE_ALL)
    assert _outcome(name) == ("skipped", f"component '{name}' is missing: {component.remedy}")


def _outcome(name: str) -> tuple[str, str]:
    """What require(name) does to a test: ("passed" | "skipped" | "failed", its message)."""
    try:
        require(name)
    except pytest.fail.Exception as failure:
        return "failed", str(failure)
    except pytest.skip.Exception as skip:
        return "skipped", str(skip)
    return "passed", ""


INNER = '''
import pytest
from require_all import require

@pytest.fixture
def costly():
    raise AssertionError("a marked test's fixtures are not set up when its component is missing")

@pytest.mark.component("chromium")
def test_browser(costly):
    pass

def test_offline():
    require("offline")

def test_plain_skip():
    pytest.skip("some reason that names no component")
'''

COLLECTION_SKIP = '''
import pytest
pytest.importorskip("a_module_that_does_not_exist")

def test_never_collected():
    pass
'''


def _run(pytester, monkeypatch, required: bool):
    # the inner run is in this process and imports this require_all: its conftest fakes components missing in a
    # copy of the registry, which is put back after the test (else every later browser test would find no chromium)
    monkeypatch.setattr(require_all, "COMPONENTS", dict(require_all.COMPONENTS))
    pytester.makeconftest(
        "import require_all\n"
        "from require_all import pytest_configure, pytest_make_collect_report, pytest_runtest_makereport, "
        "pytest_runtest_setup  # noqa: F401\n"
        "for name in ('chromium', 'offline'):\n"
        "    old = require_all.COMPONENTS[name]\n"
        "    require_all.COMPONENTS[name] = type(old)(name, lambda: False, old.remedy, old.anywhere)\n")
    pytester.makepyfile(test_inner=INNER, test_collection=COLLECTION_SKIP)
    if required:
        monkeypatch.setenv(require_all.REQUIRE_ALL, "1")
    else:
        monkeypatch.delenv(require_all.REQUIRE_ALL, raising=False)
    return pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", "-rA", "--continue-on-collection-errors")


def test_in_ci_markers_plain_skips_and_collection_skips_fail(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, required=True)
    # the marked test errors in setup before its fixture; the plain skip fails; the offline check may skip anywhere
    result.assert_outcomes(errors=2, failed=1, skipped=1)  # errors: the collection, the setup
    result.stdout.fnmatch_lines(["*TIML_REQUIRE_ALL=1*component 'chromium' is missing*"])
    result.stdout.fnmatch_lines(["*TIML_REQUIRE_ALL=1*a_module_that_does_not_exist*"])
    result.stdout.fnmatch_lines(["*TIML_REQUIRE_ALL=1*some reason that names no component*"])
    assert "fixtures are not set up" not in result.stdout.str()


def test_locally_they_skip_with_the_component_name(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, required=False)
    result.assert_outcomes(skipped=4)
    result.stdout.fnmatch_lines(["*component 'chromium' is missing: Debian's chromium*"])
