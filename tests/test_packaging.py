"""Project files agree with each other: environment.yml vs pyproject, README commands, CI."""

from __future__ import annotations

import re
import tomllib

import yaml
from conftest import REPO


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_environment_yml_names_the_same_packages_and_pins():
    project = pyproject()["project"]
    extras = project["optional-dependencies"]
    wanted = set(project["dependencies"]) | set(extras["dev"]) | set(extras["notebooks"])
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert any(d.startswith("python=3.11") for d in conda) and "pip" in conda
    assert env["channels"] == ["conda-forge"]
    assert set(pip_section) - {"-e ."} == wanted


def test_torch_is_pinned_exactly():
    deps = pyproject()["project"]["dependencies"]
    assert [d for d in deps if d.startswith("torch")] == ["torch==2.13.0"]


def test_readme_opens_with_the_three_commands_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```(?:bash|sh|shell)?\n(.*?)```", readme, re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert commands == ["make run", "make test", "make lab"]
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci and "OPTFUSION_REAL_SAMPLES" in ci
