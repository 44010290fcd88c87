"""The packages import one way only: core <- catalog, sites, mocksites <- models <- stages <- pipelines, jobs <- crawler <- ops.

Issue 16 layers the code so that a change low down cannot be broken by one high up, and a package
can be read without the ones above it. This test reads every project module's imports (top level,
inside functions and under TYPE_CHECKING alike: scripts/code_shape.py's reader) and fails on any
import that points up. A package may import its own layer and those below it.
"""

from __future__ import annotations

import ast

from scripts.code_shape import PACKAGES, imported_modules, modules

LAYERS = {"core": 0, "catalog": 1, "sites": 1, "mocksites": 1, "models": 2, "stages": 3, "pipelines": 4, "jobs": 4,
          "crawler": 5, "ops": 6}
APART = {"pipelines", "jobs"}  # same layer, but the crawl's adapters and the library jobs share stages, not each other


def upward_imports() -> set[tuple[str, str]]:
    found = set()
    for dotted, path in modules():
        own = LAYERS[dotted.split(".")[0]]
        for imported in imported_modules(ast.parse(path.read_text(encoding="utf-8"))):
            layer = LAYERS.get(imported.split(".")[0])
            apart = {dotted.split(".")[0], imported.split(".")[0]} == APART
            if layer is not None and (layer > own or apart):
                found.add((dotted, imported))
    return found


def test_every_package_has_a_layer():
    assert set(PACKAGES) == set(LAYERS)


def test_no_package_imports_one_above_it():
    found = upward_imports()
    assert not found, f"imports against the layers {list(LAYERS)} (move the code down, or the import up): {sorted(found)}"
