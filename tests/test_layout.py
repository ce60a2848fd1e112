"""Tests the house's floors (docs/layout.md): model/ never imports Beam or pipeline/, and inside pipeline/ each floor
imports only the floors below it, so no import runs back up."""

import ast
import pathlib

from tests.helpers import REPO_ROOT

# pipeline/'s floors, bottom up, by top-level module or package.
PIPELINE_FLOORS = {
    "records": 0, "console": 0, "timeline": 0, "progress": 0, "options": 0, "store_endpoints": 0,
    "outputs": 1, "reading": 2, "scoring": 3, "report": 4, "publish": 5, "store_watch": 5,
    "graph": 6, "preflight": 6, "score": 6,
}


def _imported(path: pathlib.Path) -> list:
    """Every module an import in `path` names (for `from a.b import c`: a.b and a.b.c)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def _floor(module: str):
    parts = module.split(".")
    return PIPELINE_FLOORS.get(parts[1]) if len(parts) > 1 and parts[0] == "pipeline" else None


def test_every_pipeline_module_has_a_floor():
    root = pathlib.Path(REPO_ROOT) / "pipeline"
    tops = {path.stem for path in root.glob("*.py") if path.stem != "__init__"} | {
        path.name for path in root.iterdir() if path.is_dir() and (path / "__init__.py").exists()}
    assert tops == set(PIPELINE_FLOORS)


def test_no_import_runs_back_up():
    root = pathlib.Path(REPO_ROOT)
    upward = []
    for path in sorted((root / "pipeline").rglob("*.py")):
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        if path.stem in ("__init__", "__main__"):
            continue
        for name in _imported(path):
            if _floor(name) is not None and _floor(name) > _floor(module):
                upward.append(f"{module} -> {name}")
    assert upward == []


def test_model_never_imports_beam_or_the_pipeline():
    root = pathlib.Path(REPO_ROOT)
    found = [f"{path.relative_to(root)} -> {name}" for path in sorted((root / "model").rglob("*.py"))
             for name in _imported(path) if name.split(".")[0] in ("apache_beam", "pipeline")]
    assert found == []
