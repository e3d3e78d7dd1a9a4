"""The layout tells the architecture (issues 20 and 31), checked on the source, imports at
module level and inside functions alike: every module sits in a layer package
(``LAYERS``, lowest first), imports only its own package and lower layers, a stage only the
stages before it; no import cycle between modules at any depth; no private name imported from
another module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).parents[1] / "nrsdark_dask"
# the pipeline's stages (nrsdark_dask/stages/), in order
STAGES = ["fetch", "select", "calibrate", "selfcheck", "cull", "build", "analyze", "science",
          "trends", "plan", "periods", "monitor", "hotmasks"]
# the layers, lowest first: a module imports its own package's modules and lower layers' only
LAYERS = [("instrument", "config", "paths"), ("simulate",), ("kernels",), ("store",),
          ("cluster", "results", "telemetry", "pages"), ("calibration",), ("reduction",),
          ("export",), ("stages",), ("cli",)]


def _layer(module: str) -> int:
    top = module.split(".")[0]
    return next(i for i, names in enumerate(LAYERS) if top in names)


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "stages" and len(parts) > 1 else None


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


def _modules_imported(found) -> set[str]:
    """The modules of the package an import set names (a name of a package's ``__init__``
    counts as that package)."""
    known = {_module(p) for p in PKG.rglob("*.py")}
    out = set()
    for target, name in found:
        whole = f"{target}.{name}" if target else name
        out.add(whole if whole in known else target)
    return {m for m in out if m in known and m}


def test_every_module_sits_in_a_layer_and_the_stages_are_the_stage_modules():
    mods = [m for m in _imports() if m and not m.startswith("simulate")]
    assert all(_top(m) in {n for names in LAYERS for n in names} for m in mods), \
        sorted({_top(m) for m in mods} - {n for names in LAYERS for n in names})
    found = sorted(p.stem for p in (PKG / "stages").glob("*.py") if p.stem != "__init__")
    assert found == sorted(STAGES)


def test_no_private_name_is_imported_from_another_module():
    bad = [(m, t, n) for m, found in _imports().items() for t, n in found
           if n.startswith("_") and n != "__version__"]
    assert not bad, bad


def test_imports_go_down_the_layers_and_forward_through_the_stages():
    bad = []
    for m, found in _imports().items():
        if not m:
            continue
        for t in _modules_imported(found):
            if _top(t) == _top(m):
                s, u = _stage(m), _stage(t)
                if s and u and STAGES.index(u) > STAGES.index(s):
                    bad.append((m, t, "a later stage"))
            elif _layer(t) >= _layer(m):
                bad.append((m, t, "not a lower layer"))
    assert not bad, bad


def test_the_modules_import_no_cycle_at_any_depth():
    graph = {m: _modules_imported(found) - {m} for m, found in _imports().items()}
    # a package's __init__ re-exporting its modules is not a cycle with them
    graph = {m: {t for t in v if not m.startswith(t + ".")} for m, v in graph.items()}
    seen, stack = set(), []

    def visit(n):
        if n in stack:
            pytest.fail("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
        if n in seen:
            return
        stack.append(n)
        for t in sorted(graph.get(n, ())):
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


def test_the_layout_page_matches_the_tree():
    """docs/layout.md's layer table names the layers of ``LAYERS`` in order, and every module
    path it names exists (a moved or renamed module breaks this, not the page silently)."""
    import re

    page = (PKG.parent / "docs" / "layout.md").read_text()
    rows = [r for r in page.splitlines() if r.startswith("| ") and r.count("|") == 4][1:]
    listed = [tuple(n.removesuffix(".py").rstrip("/") for n in re.findall(r"`([\w/.]+)`",
                                                                          r.split("|")[2]))
              for r in rows if not r.startswith("|---")]
    assert [tuple(sorted(x)) for x in listed] == [tuple(sorted(x)) for x in LAYERS]
    for path in re.findall(r"`(nrsdark_dask/[\w/.]+|(?:calibration|store|reduction|export|"
                           r"kernels|cli|stages)/[\w/.]+\.py)`", page):
        full = PKG.parent / path if path.startswith("nrsdark_dask/") else PKG / path
        assert full.exists(), path
