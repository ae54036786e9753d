"""The performance suite's parts beside the package (benchmarks/bench_suite.py runs them):
presets (the shapes), targets (the issue's, judged from a report), tables (the README
markdown from the JSON), plot (the PNG of the ratios), host (git, README markers, glibc malloc:
the process- and repository-wide effects, which only scripts may have)."""
