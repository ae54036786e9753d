"""`python -m ttfs_ext ...` is the `ttfs` command (torchrun -m ttfs_ext train ... runs it per process)."""
import sys

from ttfs_ext.cli.main import main

sys.exit(main())
