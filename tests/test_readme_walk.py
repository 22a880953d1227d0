"""The README's newcomer path, walked: the command blocks of its section "After the demo", extracted from the README
itself and run in order on a fresh copy of the demo, so the README cannot drift from what works.

The demo is made as ``make demo`` makes it (its ``timl.data`` and ``timl.train`` lines read from the Makefile; the
table's first row only, to keep the suite short). Each command runs in ``bash`` with the project's environment
first on ``PATH`` (what ``source .venv/bin/activate`` does). A command ending in ``&`` starts a server in the
background: the next command waits for its port; ``kill %1`` stops it (its whole process group). The ports the
README names are replaced by free ones; every command must exit 0.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO

pytestmark = pytest.mark.slow

#: The README section whose command blocks are walked.
SECTION = "## After the demo"


def walk_commands(readme: str) -> list[str]:
    """The commands of the section's plain code blocks, in order: comments dropped, ``\\``-continued lines
    joined, ``source .venv/bin/activate`` left to the environment the walk sets."""
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + len(SECTION))
    section = readme[start:end if end > 0 else None]
    commands = []
    for block in re.findall(r"^```\n(.*?)^```$", section, flags=re.S | re.M):
        text = re.sub(r"\\\n\s*", "", block)
        for line in text.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#") and not line.startswith("source "):
                commands.append(line)
    return commands


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the background server on port {port} ended with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"nothing answered on port {port} within {seconds} s")


def _makefile_demo_commands() -> list[str]:
    """The demo's data and training lines of the Makefile, as shell commands."""
    makefile = (REPO / "Makefile").read_text()
    lines = [line.strip().replace("$(PY)", "python") for line in makefile.splitlines()
             if line.startswith("\t$(PY) -m timl.data") or line.startswith("\t$(PY) -m timl.train")]
    assert len(lines) == 2, lines
    return [line + (" --rows 0" if "timl.train" in line else "") for line in lines]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    """A fresh copy of the demo: its table and server configuration, the digits data, the first row trained and
    registered as models:/digits@champion in ./mlflow.db."""
    folder = tmp_path_factory.mktemp("demo")
    for name in ("experiments/quickstart.csv", "serving/timl_server_config.json"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, folder / name)
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                   "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": "", "MLFLOW_DISABLE_TELEMETRY": "true"}
    environment.pop("MLFLOW_TRACKING_URI")
    for command in _makefile_demo_commands():
        done = subprocess.run(["bash", "-c", command], cwd=folder, env=environment, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return folder, environment


def test_the_readme_names_the_commands_it_walks():
    commands = walk_commands((REPO / "README.md").read_text())
    assert commands[0].startswith("python -m timl.predict --model-uri models:/digits@champion")
    assert any(command.startswith("mlflow models serve") and command.endswith("&") for command in commands)
    assert commands.count("kill %1") == 2


def test_the_newcomers_path_of_the_readme_works(demo):
    folder, environment = demo
    readme = (REPO / "README.md").read_text()
    ports = {port: str(_free_port()) for port in ("5001", "8080")}
    background: list[tuple[subprocess.Popen, int]] = []
    outputs = []
    try:
        for command in walk_commands(readme):
            for old, new in ports.items():
                command = re.sub(rf"(?<=[ :]){old}\b", new, command)
            if command == "kill %1":
                process, _ = background.pop()
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=60)
                continue
            for process, port in background:
                _wait_for_port(port, process)
            if command.endswith("&"):
                port = int(re.findall(r"(?:-p |127\.0\.0\.1:)(\d+)", command)[-1])
                log = (folder / f"server-{port}.log").open("w")
                process = subprocess.Popen(["bash", "-c", command[:-1]], cwd=folder, env=environment, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True)
                background.append((process, port))
                continue
            done = subprocess.run(["bash", "-c", command], cwd=folder, env=environment, capture_output=True,
                                  text=True, timeout=600)
            assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            outputs.append((command, done.stdout))
    finally:
        for process, _ in background:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    printed = dict(outputs)
    assert (folder / "predictions.csv").is_file() and (folder / "inspect_digits" / "summary.json").is_file()
    assert (folder / "explanations" / "0007-gradcam-heatmap.png").is_file()
    register_line = next(command for command in printed if command.startswith("python -m timl.register"))
    assert "Already registered as models:/digits/1" in printed[register_line], "make demo registered it"
    curl_line = next(command for command in printed if command.startswith("curl"))
    assert '"predicted_class"' in printed[curl_line] or "predicted_class" in printed[curl_line]
    client_line = next(command for command in printed if command.startswith("python -m timl.client"))
    assert "D" in printed[client_line]
