"""Modules by responsibility (issue 20 item 4), checked on the source: the package's imports
(module level and inside functions) form no cycle, no stage imports a later stage, library
modules import no stage, and no module imports another's private name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).parents[1] / "nrsdark_dask"
# the pipeline's stages, in order; the command line last
STAGES = ["fetch", "select", "calibrate", "selfcheck", "cull", "build", "analyze", "science", "trends", "plan",
          "periods", "monitor", "hotmasks", "commands", "run", "cli"]
PART_OF = {"ingest": "calibrate", "tiled": "calibrate"}  # a stage's own helper modules


def _stage(module: str) -> str:
    top = module.split(".")[0]
    return PART_OF.get(top, top)


def _module(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def _imports() -> dict[str, set[tuple[str, str]]]:
    """``{module: {(imported module, name)}}`` for every import inside the package."""
    out = {}
    for path in PKG.rglob("*.py"):
        mod = _module(path)
        if mod.startswith("simulate"):  # the simulator never imports the pipeline (tested)
            continue
        pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = pkg[:len(pkg) - node.level + 1] if node.level > 1 else pkg
                target = ".".join(base + ([node.module] if node.module else []))
                for a in node.names:
                    # "from . import x": x is a module; "from .x import y": y a name of x
                    found.add((f"{target}.{a.name}".lstrip(".") if not node.module
                               else target, a.name))
        out[mod] = found
    return out


def _top(module: str) -> str:
    return module.split(".")[0]


def test_no_private_name_is_imported_across_modules():
    bad = [(m, t, n) for m, found in _imports().items() for t, n in found
           if n.startswith("_") and _top(t) != _top(m) and n != "__version__"]
    assert not bad, bad


def test_no_stage_imports_a_later_stage_and_libraries_import_no_stage():
    bad = []
    for m, found in _imports().items():
        for t, _ in found:
            t, s = _stage(t), _stage(m)
            if t in STAGES and t != s and (s not in STAGES or STAGES.index(t) > STAGES.index(s)):
                bad.append((m, t))
    assert not bad, bad


def test_the_package_imports_form_no_cycle():
    graph = {}
    for m, found in _imports().items():
        graph.setdefault(_top(m), set()).update(_top(t) for t, _ in found if _top(t) != _top(m))
    graph = {k: {t for t in v if t in graph} for k, v in graph.items()}
    seen, stack = set(), []

    def visit(n):
        if n in stack:
            pytest.fail("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
        if n in seen:
            return
        stack.append(n)
        for t in sorted(graph[n]):
            visit(t)
        stack.pop()
        seen.add(n)

    for n in sorted(graph):
        visit(n)


def test_the_layout_page_lists_the_stages_in_their_order():
    import re

    page = (PKG.parent / "docs" / "layout.md").read_text()
    m = re.search(r"\(((?:`\w+`\s*<\s*)+`\w+`)\)", page)
    assert m, "docs/layout.md lost its stage order"
    assert re.findall(r"`(\w+)`", m.group(1)) == STAGES
