"""The floors hold: the import-linter contracts in pyproject.toml are kept, and no two modules import each other
(directly or around a longer circle)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    result = subprocess.run([command, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout and "6 kept" in result.stdout


def import_circles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected groups of modules (each a circle of imports), by Tarjan's algorithm."""
    modules = sorted(graph.modules)
    edges = {m: sorted(set(graph.find_modules_directly_imported_by(m)) & set(modules)) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in edges[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while (member := stack.pop()) != module:
                group.append(member)
            if group:
                circles.append(sorted([module, *group]))

    for module in modules:
        if module not in index:
            visit(module)
    return circles


def test_no_module_imports_itself_round_a_circle():
    graph = grimp.build_graph("kdviz", exclude_type_checking_imports=True)
    assert import_circles(graph) == []


def test_the_circle_finder_finds_a_circle(tmp_path, monkeypatch):
    package = tmp_path / "circled"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from circled import b\n")
    (package / "b.py").write_text("def f():\n    from circled import a\n")
    (package / "c.py").write_text("from circled import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_circles(grimp.build_graph("circled")) == [["circled.a", "circled.b"]]


# a run's array names: only kdviz/layout.py spells them, and the store floor builds them from it
LAYOUT_KEY = re.compile(r"""["'](inputs|teacher|student|pair|attribution|history|cache)/"""
                        r"""|\{(role|self\.role)\}/(logits|attn|feat|spatial|tokens)""")
STORE_FLOOR = {"layout.py", "integrity.py", "parts.py", "remote.py"}  # and the kdviz/store/ package


def test_no_layout_string_outside_the_store():
    found = []
    for path in sorted((ROOT / "kdviz").rglob("*.py")):
        relative = path.relative_to(ROOT / "kdviz").as_posix()
        if relative in STORE_FLOOR or relative.startswith("store/"):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if LAYOUT_KEY.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == [], "name arrays through kdviz.layout or the Run accessors:\n" + "\n".join(found)


def test_the_layout_check_sees_a_key():
    assert LAYOUT_KEY.search('run.array("inputs/attention_mask")') and LAYOUT_KEY.search('f"{role}/attn/{i}"')
    assert not LAYOUT_KEY.search("run.attention_mask")


COLOUR = re.compile(r"#[0-9a-fA-F]{6}\b|rgba?\(\s*\d")


def test_colours_come_from_the_theme():
    found = []
    for path in sorted((ROOT / "kdviz").rglob("*.py")):
        if path.name == "theme.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if COLOUR.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == [], "take colours from kdviz.views.theme:\n" + "\n".join(found)
    assert COLOUR.search('"#2563a8"') and COLOUR.search("rgba(0,0,0,.12)") and not COLOUR.search("theme.rgba(theme.INK, 0.2)")


def test_every_top_level_module_sits_on_a_floor():
    """The layers contract checks only the modules it names, so a new module must be given its floor."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"]
    layers = next(contract["layers"] for contract in config if contract["type"] == "layers")
    named = {name.strip() for layer in layers for name in layer.replace("|", ":").split(":")}
    modules = {f"kdviz.{path.stem}" for path in (ROOT / "kdviz").glob("*.py") if path.stem != "__init__"}
    packages = {f"kdviz.{path.parent.name}" for path in (ROOT / "kdviz").glob("*/__init__.py")}
    assert sorted((modules | packages) - named) == [], "add the module to a floor in pyproject.toml's layers"
