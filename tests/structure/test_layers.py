"""One-way imports: a base of small modules (errors, io, grading, sampling: the types every family's sampler
shares, ...) ← models (each family with its sampler) ← projector ← pipelines ← evaluation | training ← toy ← cli /
api. No part of the package, imported whole, loads a part above it; evaluation and training load nothing of each
other."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import latent_darm

PACKAGE = Path(latent_darm.__file__).parent
BASE = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "api"))
# Bottom to top; parts of one layer may import each other.
LAYERS = [
    BASE,
    ["models"],
    ["projector"],
    ["pipelines"],
    ["evaluation", "training"],
    ["toy", "latent_tokens"],
    ["cli", "api"],
]
LAYER = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
APART = {("evaluation", "training"), ("training", "evaluation")}

# Imports the named parts one after another, bottom up, each with all its modules, and reports what each step added
# to sys.modules. Equivalent to importing each part alone in a fresh interpreter: whatever an earlier step loaded
# was checked there and lies in a layer the later part may use anyway. Two interpreters, because evaluation and
# training share a layer but must not share modules.
PROBE = """
import importlib, json, pkgutil, sys
added = {}
for name in sys.argv[1:]:
    before = set(sys.modules)
    module = importlib.import_module("latent_darm." + name)
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), module.__name__ + "."):
        importlib.import_module(info.name)
    added[name] = sorted({m.split(".")[1] for m in set(sys.modules) - before if m.startswith("latent_darm.")})
print(json.dumps(added))
"""


def _probe(*chains: list[str]) -> dict[str, list[str]]:
    command = [sys.executable, "-c", PROBE]
    runs = [subprocess.Popen([*command, *chain], stdout=subprocess.PIPE, text=True) for chain in chains]
    added: dict[str, list[str]] = {}
    for run in runs:
        out, _ = run.communicate(timeout=600)
        assert run.returncode == 0
        added.update(json.loads(out.strip().splitlines()[-1]))
    return added


def test_every_part_of_the_package_has_a_layer():
    parts = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert parts - {"__init__"} == set(LAYER)


def test_no_part_imports_a_layer_above_it():
    below_top = [part for parts in LAYERS[:-1] for part in parts]
    added = _probe(
        [p for p in below_top if p != "training"],
        [p for p in below_top if p not in ("evaluation", "toy", "latent_tokens")],
    )
    assert set(added) == set(below_top)
    for part, loaded in added.items():
        wrong = [o for o in loaded if LAYER[o] > LAYER[part] or (part, o) in APART]
        assert not wrong, f"importing latent_darm.{part} loads latent_darm.{', '.join(wrong)}"
