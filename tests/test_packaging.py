"""Package metadata: the license (PEP 639), the version written once, ``--version`` and
``python -m sapiens2``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import sapiens2
from sapiens2.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_license_is_an_spdx_expression_with_its_file(pyproject):
    project = pyproject["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert "Sapiens2 License" in text  # the weights' license is named, not granted
    # PEP 639 (string license + license-files) needs setuptools 77
    requires = " ".join(pyproject["build-system"]["requires"])
    pin = re.search(r"setuptools>=(\d+)", requires)
    assert pin and int(pin[1]) >= 77


def test_torch_requirement_has_public_fully_shard(pyproject):
    torch_req = [d for d in pyproject["project"]["dependencies"] if d.startswith("torch")]
    assert torch_req == ["torch>=2.6"]


def test_version_is_written_once(pyproject):
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "sapiens2.__version__"}
    expand = pytest.importorskip("setuptools.config.expand")
    # read statically (no import of torch), as an isolated wheel build does
    assert expand.read_attr("sapiens2.__version__", {"": "src"}, ROOT) == sapiens2.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc|\.dev|\.post)?\d*", sapiens2.__version__)


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"sapiens2 {sapiens2.__version__} (torch ") and "\n" not in line


def test_python_dash_m_runs_the_cli():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "sapiens2", "--version"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"sapiens2 {sapiens2.__version__} ")
