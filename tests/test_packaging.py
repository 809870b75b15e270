"""pyproject.toml and environment.yml list the same packages with the same bounds."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
CONDA_TO_PIP = {"pytorch": "torch", "python-kaleido": "kaleido"}


def split(requirement: str) -> tuple[str, str]:
    """(name, bound); pip extras such as ``moto[server]`` name the same package as conda's ``moto``."""
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)$", requirement)
    assert match, requirement
    return match.group(1).lower().replace("_", "-"), match.group(3).replace(" ", "")


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    requirements = project["dependencies"] + extras["hf"] + extras["dev"]
    return dict(split(r) for r in requirements)


def conda_requirements() -> dict[str, str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = lines.index("dependencies:")
    entries = [line.strip()[2:] for line in lines[start + 1 :] if line.strip().startswith("- ")]
    found = dict(split(e.replace("=", "==", 1) if re.match(r"^[\w\-]+=[^=]", e) else e) for e in entries)
    found.pop("python")
    return {CONDA_TO_PIP.get(name, name): bound for name, bound in found.items()}


def test_environment_yml_matches_pyproject():
    assert conda_requirements() == pyproject_requirements()


def test_bounds_keep_a_users_existing_torch():
    requirements = pyproject_requirements()
    assert requirements["torch"] == ">=2.3"
    assert requirements["plotly"] == ">=6" and requirements["panel"] == ">=1.5" and requirements["zarr"] == ">=3"


def test_extras_and_entry_point():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert set(project["optional-dependencies"]) >= {"hf", "dev", "all"}
    assert project["scripts"]["kdviz"] == "kdviz.cli:main"


def test_the_readme_shows_one_small_screenshot_per_page():
    """Committed from the browser test (tests/test_serve_browser.py, KDVIZ_UPDATE_SCREENSHOTS=1): under 200 KB each,
    every one shown in the README."""
    root = Path(__file__).resolve().parent.parent
    shots = sorted((root / "docs" / "screenshots").glob("*.png"))
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert {s.stem for s in shots} == {"overview", "logits", "tokens", "attention", "features", "attribution", "training"}
    for shot in shots:
        assert shot.stat().st_size < 200_000, shot
        assert f"docs/screenshots/{shot.name}" in readme, shot
