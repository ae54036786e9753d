"""How the source tree is laid out, for before/after comparisons of a restructuring: files
and lines per folder, the five largest files, how many places spell each argument check,
and the depth of the package's import graph (the longest chain of intra-package imports).

    python benchmarks/layout_stats.py [--repo DIR] [--json OUT]
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
from collections import defaultdict
from pathlib import Path

SOURCE = (".py", ".cpp", ".h", ".cu", ".cuh")
# One phrase per argument rule, as the error messages spell it: each place that raises it.
CHECKS = {
    "spike-time dtype": r"must be float32 or float64",
    "weight dtype": r"weight must have the dtype of t_in",
    "device": r"is on .* but t_in is on",
    "linear in_features": r"t_in must have shape \(\.\.\.,",
    "conv channels/groups": r"channels but weight",
    "kernel fits input": r"does not fit",
    "stride/padding/dilation": r"must be (two ints|an int) >=",
    "finite window": r"must be finite",
    "bias shape": r"bias must have shape",
}


def tracked(repo: Path) -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True, check=True).stdout
    return [repo / p for p in out.splitlines() if p.endswith(SOURCE) and (repo / p).is_file()]


def module_level(tree: ast.AST):
    """The nodes that run on import: not the bodies of functions (their imports are lazy)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(c for c in ast.iter_child_nodes(node)
                     if not isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


def import_depth(package: Path, collapse: bool = False) -> tuple[int, list[str]]:
    """Longest chain of import-time imports between the package's modules; with collapse,
    between its top-level units (a subpackage counts as one)."""
    root = package.name
    modules = {}
    for f in package.rglob("*.py"):
        parts = f.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = f
    graph = defaultdict(set)
    for name, f in modules.items():
        is_pkg = f.name == "__init__.py"
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        for node in module_level(ast.parse(f.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    stem = base[: len(base) - node.level + 1]
                    mod = ".".join(stem + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                # `from pkg import mod` imports mod (pkg's __init__ runs anyway, but is not the
                # dependency); `from mod import name` imports mod
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names
                           if a.name != "_C"]  # the compiled extension: a leaf
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                if t in modules and t != name and t.startswith(root):
                    if collapse:
                        a, b = ".".join(name.split(".")[:2]), ".".join(t.split(".")[:2])
                        if a != b:
                            graph[a].add(b)
                    else:
                        graph[name].add(t)
    memo: dict[str, list[str]] = {}

    def chain(n: str, seen: frozenset) -> list[str]:
        if n in memo:
            return memo[n]
        best = [n]
        for m in graph[n]:
            if m not in seen:
                c = [n] + chain(m, seen | {m})
                if len(c) > len(best):
                    best = c
        memo[n] = best
        return best

    nodes = {".".join(n.split(".")[:2]) for n in modules} if collapse else set(modules)
    longest = max((chain(n, frozenset({n})) for n in sorted(nodes)), key=len)
    return len(longest) - 1, longest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--json")
    args = parser.parse_args()
    repo = Path(args.repo)
    files = tracked(repo)
    lines = {f: len(f.read_text(errors="replace").splitlines()) for f in files}
    folders: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for f, n in lines.items():
        folder = str(f.parent.relative_to(repo))
        folders[folder][0] += 1
        folders[folder][1] += n
    checks = {}
    for rule, pattern in CHECKS.items():
        places = []
        for f in files:
            if "tests" in f.relative_to(repo).parts or f.name == Path(__file__).name:
                continue
            for i, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
                if re.search(pattern, line):
                    places.append(f"{f.relative_to(repo)}:{i}")
        checks[rule] = places
    depth, chain = import_depth(repo / "python" / "ttfs_ext")
    unit_depth, unit_chain = import_depth(repo / "python" / "ttfs_ext", collapse=True)
    result = {
        "folders": {k: {"files": v[0], "lines": v[1]} for k, v in sorted(folders.items())},
        "largest": [(str(f.relative_to(repo)), n) for f, n in sorted(lines.items(), key=lambda x: -x[1])[:5]],
        "check_places": {k: len(v) for k, v in checks.items()},
        "import_depth": depth,
        "import_chain": chain,
        "import_depth_units": unit_depth,  # subpackages collapsed
        "import_chain_units": unit_chain,
    }
    print("folder                              files   lines")
    for k, v in result["folders"].items():
        print(f"{k:36s}{v['files']:5d}{v['lines']:8d}")
    print("largest:", ", ".join(f"{f} ({n})" for f, n in result["largest"]))
    print("places each argument check is spelt:", result["check_places"])
    print(f"import depth {depth}: {' -> '.join(chain)}")
    print(f"import depth between top-level units {unit_depth}: {' -> '.join(unit_chain)}")
    if args.json:
        Path(args.json).write_text(json.dumps({**result, "check_locations": checks}, indent=2) + "\n")


if __name__ == "__main__":
    main()
