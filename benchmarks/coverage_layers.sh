#!/usr/bin/env bash
# Line coverage of the device-generic layer code (csrc/layers/) under the op tests, which run
# under the CPU kernel profile and the CUDA-like one (tests/conftest.py: kernel_profile): every
# branch the CUDA path takes through csrc/layers/ should show as run. gcov, on a build of its
# own in a virtual environment that sees this Python's packages (nothing installed here changes).
#
#   bash benchmarks/coverage_layers.sh [OUT]     # OUT: the report (default benchmarks/results/coverage_layers.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
out=${1:-benchmarks/results/coverage_layers.txt}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python -m venv --system-site-packages "$work/venv"
py="$work/venv/bin/python"
start=$SECONDS
# No LTO (gcov needs the objects' own code), -O1 for speed, --coverage on every source.
"$py" -m pip install -q --no-build-isolation --no-deps --force-reinstall -Cbuild-dir="$work/build" \
  -Ccmake.define.CMAKE_CXX_FLAGS="--coverage -fno-lto -O1" -Ccmake.define.CMAKE_SHARED_LINKER_FLAGS="--coverage" \
  -Ccmake.define.CMAKE_INTERPROCEDURAL_OPTIMIZATION=OFF -Ccmake.define.TTFS_CUDA=OFF "$repo"
echo "coverage build: $((SECONDS - start)) s"
start=$SECONDS
(cd "$repo" && "$py" -m pytest -q -p no:cacheprovider tests/test_dense.py tests/test_conv2d.py tests/test_first_spike.py \
  tests/test_fs.py tests/test_spide.py tests/test_spike_conv.py tests/test_raw_ops.py tests/test_errors.py \
  tests/test_element_math.py tests/test_cuda_semantics.py -x -q 2>&1 | tail -3)
echo "op tests under coverage: $((SECONDS - start)) s"
objdir=$(find "$work/build" -type d -path "*CMakeFiles/_C.dir/csrc/layers" | head -1)
{
  echo "# Line coverage of csrc/layers/ (gcov), op tests under the 'cpu' and 'cuda' CPU kernel profiles"
  echo "# commit $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "# command: bash benchmarks/coverage_layers.sh"
  (cd "$objdir" && gcov -n ./*.cpp.gcno 2>/dev/null | grep -A1 "^File '.*csrc/layers/[a-z_0-9]*\.cpp'" \
    | grep -v "^--$" | paste - - | sed -E "s|File '$repo/||; s|'\s+Lines executed:| |")
} | tee "$out"
# The lines never run, per file, for whoever wants to look.
(cd "$objdir" && gcov ./*.cpp.gcno >/dev/null 2>&1 || true
 for f in "$objdir"/*.cpp.gcov; do
   [ -e "$f" ] || continue
   grep -E "^\s+#####:" "$f" | sed "s|^|$(basename "$f" .gcov): |"
 done) > "${out%.txt}_missed.txt" || true
echo "wrote $out and ${out%.txt}_missed.txt"
