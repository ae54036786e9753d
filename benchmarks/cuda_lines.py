"""What the CUDA kernels compute themselves: per .cu file, its code lines, the lines of device
code (inside __global__ / __device__ functions), and of those the lines that call the shared
element math (csrc/kernels/element_math.h, which the CPU loops run too) and the lines that do
not: launch, indexing, loads and stores, reductions. `--show` prints the latter, so that a
reader can check that none of them computes an element formula of its own.

    python benchmarks/cuda_lines.py [--rev REV] [--show] [--json OUT]

--rev reads the files of a git revision (for a before/after comparison) instead of the tree.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def files(rev: str | None) -> dict[str, str]:
    if rev is None:
        return {str(p.relative_to(ROOT)): p.read_text() for p in sorted((ROOT / "csrc" / "cuda").glob("*.cu"))}
    names = subprocess.run(["git", "ls-tree", "--name-only", rev, "csrc/cuda/"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    return {n: subprocess.run(["git", "show", f"{rev}:{n}"], cwd=ROOT, check=True, capture_output=True,
                              text=True).stdout for n in names if n.endswith(".cu")}


def code_lines(text: str) -> list[str]:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    out = []
    for line in text.splitlines():
        line = line.split("//", 1)[0].rstrip()
        if line.strip() and not line.lstrip().startswith("#"):
            out.append(line)
    return out


def device_lines(lines: list[str]) -> list[str]:
    """Lines inside __global__ / __device__ function bodies (brace counting from the signature)."""
    out, depth, inside, pending = [], 0, False, False
    for line in lines:
        if not inside and re.search(r"__global__|__device__", line) and "__shared__" not in line:
            pending = True
        if pending or inside:
            opens, closes = line.count("{"), line.count("}")
            if pending and opens:
                inside, pending, depth = True, False, 0
            if inside:
                out.append(line)
                depth += opens - closes
                if depth <= 0:
                    inside = False
    return out


def calls_shared_math(line: str) -> bool:
    return "math::" in line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default=None, help="a git revision instead of the working tree")
    ap.add_argument("--json", default=None, help="write the counts as JSON here")
    ap.add_argument("--show", action="store_true", help="print every line counted as element math")
    args = ap.parse_args()
    report = {}
    for name, text in files(args.rev).items():
        lines = code_lines(text)
        dev = device_lines(lines)
        other = [line.strip() for line in dev if not calls_shared_math(line)]
        report[name] = {"code_lines": len(lines), "device_lines": len(dev),
                        "shared_math_lines": len(dev) - len(other), "other_device_lines": other}
    width = max(len(n) for n in report) if report else 10
    print(f"{'file':<{width}}  code  device  calling element_math.h ({args.rev or 'working tree'})")
    for name, r in report.items():
        print(f"{name:<{width}}  {r['code_lines']:4d}  {r['device_lines']:6d}  {r['shared_math_lines']:4d}")
        if args.show:
            for line in r["other_device_lines"]:
                print(f"    {line}")
    total = {k: sum(r[k] for r in report.values()) for k in ("code_lines", "device_lines", "shared_math_lines")}
    print(f"{'total':<{width}}  {total['code_lines']:4d}  {total['device_lines']:6d}  {total['shared_math_lines']:4d}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rev": args.rev, "files": report, "total": total}, indent=1) + "\n")


if __name__ == "__main__":
    main()
