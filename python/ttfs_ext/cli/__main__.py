"""python -m ttfs_ext.cli ...: the same as `ttfs ...`."""
import sys

from .main import main

sys.exit(main())
