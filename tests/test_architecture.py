"""The layer rule of docs/architecture.md, checked on the source: every import of a bertkit module points down.

Imports are read with ``ast`` (function-level and ``TYPE_CHECKING`` imports included), so the test needs no
import of the package and fails on the file and line that breaks the rule.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "bertkit"

# Part of bertkit (a sub-package or a top-level module) -> its layer; docs/architecture.md draws the same table.
LAYERS = {
    "variants": 0, "files": 0,
    "config": 1, "tokenizer": 1,
    "checkpoint": 2,
    "model": 3,
    "data": 4, "tasks": 4, "train": 4,
    "inspect": 5,
    "recipes": 6,
    "infer": 7,
    "serve": 8,
    "cli": 9, "demo": 9, "bertkit": 9,
    "__main__": 10,
}  # fmt: skip
# Imports between parts of one layer that the rule allows: task families read files through data's readers,
# and the command line runs the demo.
PEERS = {("tasks", "data"), ("cli", "demo")}
# Inference runs without the training loop: the Predictor and the server never load it.
NEVER = {("infer", "train"), ("infer", "recipes"), ("serve", "train"), ("serve", "recipes")}

def part_of(module: str) -> str:
    """``bertkit.data.shards`` -> ``data``; ``bertkit`` (the package face) -> ``bertkit``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "bertkit"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, package: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, imported bertkit module) for every import statement of the file, relative ones resolved."""
    here = module_name(path, package).split(".")
    home = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = home[: len(home) - node.level + 1] if node.level else []
            target = ".".join([*base, node.module] if node.module else base)
            names = [f"{target}.{alias.name}" for alias in node.names] if target == "bertkit" else [target]
            found += [(node.lineno, name) for name in names]
    return [(line, name) for line, name in found if name == "bertkit" or name.startswith("bertkit.")]


def violations(package: Path = PACKAGE) -> list[str]:
    """One line per import that breaks the rule, naming the file and line."""
    found = []
    for path in sorted(package.rglob("*.py")):
        source = part_of(module_name(path, package))
        for line, target in imports(path, package):
            dest = part_of(target)
            if dest == source:
                continue
            where = f"{path.relative_to(package.parent)}:{line}: {source} (layer {LAYERS.get(source)}) imports {target}"
            if source not in LAYERS or dest not in LAYERS:
                found.append(f"{where}: add the new part to LAYERS here and in docs/architecture.md")
            elif (source, dest) in NEVER:
                found.append(f"{where}: inference must not load the training side")
            elif LAYERS[dest] > LAYERS[source] or (LAYERS[dest] == LAYERS[source] and (source, dest) not in PEERS):
                found.append(f"{where} (layer {LAYERS[dest]}): imports point down only")
    return found


def test_every_import_points_to_a_lower_layer():
    assert violations() == []


def test_the_rule_catches_upward_and_forbidden_imports(tmp_path):
    fake = tmp_path / "bertkit"
    for name, text in {"model/heads.py": "from ..train import loop\n", "infer/predictor.py": "import bertkit.train\n",
                       "tasks/qa.py": "from bertkit.data import shards\n"}.items():
        (fake / name).parent.mkdir(parents=True, exist_ok=True)
        (fake / name).write_text(text, encoding="utf-8")
    assert violations(fake) == [
        "bertkit/infer/predictor.py:1: infer (layer 7) imports bertkit.train: inference must not load the "
        "training side",
        "bertkit/model/heads.py:1: model (layer 3) imports bertkit.train (layer 4): imports point down only",
    ]


def test_the_layer_table_names_every_part():
    parts = {part_of(module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert parts <= set(LAYERS), sorted(parts - set(LAYERS))


@pytest.mark.parametrize("module", ["bertkit.serve.app", "bertkit.infer.predictor", "bertkit"])
def test_inference_does_not_load_the_training_loop(module):
    code = (f"import sys, {module}; loaded = [m for m in sys.modules if m.startswith(('bertkit.train', "
            "'bertkit.recipes'))]; print(loaded); assert not loaded")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(PACKAGE.parent), "PATH": ""})
    assert done.returncode == 0, done.stdout + done.stderr
