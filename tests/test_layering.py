"""Imports point down only (DESIGN.md §2), and the pure-Python layers never import torch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "affectllm"

# Lower number = lower layer. A module may import only from its own layer or below.
LAYERS: dict[str, int] = {
    "types": 0, "config": 0, "registry": 0,
    "parsing": 1, "taxonomy": 1, "media": 1,
    "rewards": 2, "metrics": 2, "data": 2, "model": 2,
    "train": 3, "serve": 3, "evaluation": 3,
    "cli": 4, "demo": 4,
}
PURE = {"parsing", "taxonomy", "rewards", "metrics"}
HEAVY = ("torch", "transformers", "peft", "trl", "accelerate", "deepspeed")


def _part(module_path: Path) -> str:
    rel = module_path.relative_to(PKG).with_suffix("")
    return rel.parts[0]


def _imports(tree: ast.AST, module_path: Path) -> list[tuple[str, int]]:
    """Absolute names imported by a module (relative imports resolved), with line numbers."""
    out = []
    pkg_parts = ["affectllm", *module_path.relative_to(PKG).with_suffix("").parts[:-1]]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((name, node.lineno))
    return out


MODULES = sorted(p for p in PKG.rglob("*.py") if p.name != "__init__.py" or p.parent != PKG)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_down(path: Path) -> None:
    part = _part(path)
    if part not in LAYERS:
        pytest.fail(f"{path}: top-level part {part!r} has no layer; add it to LAYERS in tests/test_layering.py")
    tree = ast.parse(path.read_text(), filename=str(path))
    for name, line in _imports(tree, path):
        if name.startswith("affectllm."):
            target = name.split(".")[1]
            if target in LAYERS:
                assert LAYERS[target] <= LAYERS[part], f"{path}:{line}: {part} (layer {LAYERS[part]}) imports {name}"
        if part in PURE:
            assert name.split(".")[0] not in HEAVY, f"{path}:{line}: pure module imports {name}"


def test_layering_catches_an_upward_import(tmp_path: Path) -> None:
    """The checker itself fails on a bad import (so the test above can fail)."""
    fake = PKG / "parsing.py"
    tree = ast.parse("from affectllm.train import sft\nimport torch\n")
    names = [n for n, _ in _imports(tree, fake)]
    assert "affectllm.train" in names and "torch" in names
    assert LAYERS["train"] > LAYERS["parsing"]
