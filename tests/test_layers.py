"""The packages import one way only: core <- catalog, mocksites <- models <- pipelines <- crawler.

Issue 16 layers the code so that a change low down cannot be broken by one high up, and a package
can be read without the ones above it. This test reads every project module's imports (top level,
inside functions and under TYPE_CHECKING alike: scripts/code_shape.py's reader) and fails on any
import that points up. The imports that point up today are listed in ``NOT_YET_LAYERED``: the list
may only shrink, so the test also fails when one of them is gone and still listed.
"""

from __future__ import annotations

import ast

from scripts.code_shape import imported_modules, modules

LAYERS = {"core": 0, "catalog": 1, "mocksites": 1, "models": 2, "pipelines": 3, "crawler": 4}

# (importing module, imported module): dedup, the Pixiv client and the sprite-sheet parsers still
# live above their users and move down in the next steps of issue 16
NOT_YET_LAYERED = {
    ('models.isaac.icons', 'pipelines.sprites'),
    ('pipelines.filters', 'crawler.dedup'),
    ('pipelines.originals', 'crawler.pixiv_api'),
    ('pipelines.recurate', 'crawler.dedup'),
}


def upward_imports() -> set[tuple[str, str]]:
    found = set()
    for dotted, path in modules():
        own = LAYERS[dotted.split(".")[0]]
        for imported in imported_modules(ast.parse(path.read_text(encoding="utf-8"))):
            layer = LAYERS.get(imported.split(".")[0])
            if layer is not None and layer > own:
                found.add((dotted, imported))
    return found


def test_no_package_imports_one_above_it():
    found = upward_imports()
    new = sorted(found - NOT_YET_LAYERED)
    assert not new, f"imports against the layers {list(LAYERS)} (move the code down, or the import up): {new}"


def test_the_list_of_known_upward_imports_only_shrinks():
    gone = sorted(NOT_YET_LAYERED - upward_imports())
    assert not gone, f"these no longer import upwards; take them off NOT_YET_LAYERED: {gone}"
