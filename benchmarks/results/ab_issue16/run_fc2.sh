#!/bin/bash
# side-by-side: the suite's CPU preset, FC2 cases, before (main e7563b5) and after, alternated
PY=/work/venvs/t213/bin/python
for i in 1 2; do
  (cd /tmp/before_tree && PYTHONPATH=/tmp/before_tree/python $PY benchmarks/bench_suite.py --preset cpu --no-compile --only fc2 --out /tmp/sbs/fc2_before$i) > /tmp/sbs/fc2_before$i.log 2>&1
  (cd /work/main && $PY benchmarks/bench_suite.py --preset cpu --no-compile --only fc2 --out /tmp/sbs/fc2_after$i) > /tmp/sbs/fc2_after$i.log 2>&1
done
echo done > /tmp/sbs/FC2_DONE
