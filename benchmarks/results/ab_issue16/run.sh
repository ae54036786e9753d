#!/bin/bash
# side-by-side: the suite's CPU preset, VGG16-CIFAR layers and network, before (main e7563b5) and after (i16-merge), alternated
PY=/work/venvs/t213/bin/python
for i in 1 2; do
  (cd /work/main && PYTHONPATH=/work/main/python $PY benchmarks/bench_suite.py --preset cpu --no-compile --only vgg16-cifar --out /tmp/sbs/before$i) > /tmp/sbs/before$i.log 2>&1
  (cd /work/wt/merge && $PY benchmarks/bench_suite.py --preset cpu --no-compile --only vgg16-cifar --out /tmp/sbs/after$i) > /tmp/sbs/after$i.log 2>&1
done
echo done > /tmp/sbs/DONE
