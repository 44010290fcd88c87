"""Print the shape of the code: imports between the project's packages, and its longest functions.

Why: the layering work (one direction of imports) needs a before and an after that anyone can
re-measure. An import counts once per importing module and imported package, whether at the top
of the file, inside a function or under TYPE_CHECKING: each is a dependency someone must know.

    .venv/bin/python scripts/code_shape.py [--longest 15]
"""

from __future__ import annotations

import argparse
import ast
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "catalog", "sites", "stages", "crawler", "pipelines", "jobs", "ops", "models", "mocksites")


def package_of(module: str) -> str | None:
    """The package a dotted name belongs to, one level deeper for sub-packages (stages.sprites, models.isaac)."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    if len(parts) >= 2 and (REPO / parts[0] / parts[1]).is_dir():
        return ".".join(parts[:2])
    return parts[0]


def modules() -> list[tuple[str, Path]]:
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            dotted = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found.append((dotted.removesuffix(".__init__"), path))
    return found


def imported_modules(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--longest", type=int, default=15, metavar="N", help="how many of the longest functions to list")
    args = parser.parse_args()
    edges: Counter[tuple[str, str]] = Counter()
    functions = []
    for dotted, path in modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        source = package_of(dotted)
        for target in {package_of(m) for m in imported_modules(tree)} - {None, source}:
            edges[(source, target)] += 1
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(REPO)}:{node.lineno} {node.name}"))
    print("Imports between packages (importing modules per direction):")
    for (source, target), count in sorted(edges.items()):
        back = edges.get((target, source), 0)
        print(f"  {source:<18} -> {target:<18} {count:>3}" + (f"   (and {back} back: a cycle)" if back else ""))
    cycles = {tuple(sorted(pair)) for pair in edges if (pair[1], pair[0]) in edges}
    print(f"  {len(edges)} directions, {sum(edges.values())} module imports, {len(cycles)} package pairs importing each other")
    print(f"\nLongest functions (lines), of {len(functions)}:")
    for length, where in sorted(functions, reverse=True)[: args.longest]:
        print(f"  {length:>4}  {where}")


if __name__ == "__main__":
    main()
