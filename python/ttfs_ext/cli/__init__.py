"""The `ttfs` command line (ttfs_ext.cli.main): one module per command (check, demo for
convert, jobs for train and evaluate, bench), argparse types in args."""
from .args import CommandError
from .main import build_parser, main

__all__ = ["main", "build_parser", "CommandError"]
