"""The `ttfs` command for tests/test_distributed.py, run by torchrun (or plainly), with two test hooks:
- TTFS_TEST_FAIL_AT_STEP=k (and TTFS_TEST_FAIL_RANK, default 1): that rank dies right after
  optimizer step k on torchrun's first attempt (TORCHELASTIC_RESTART_COUNT 0), as a crashed
  worker would;
- TTFS_TEST_WIDTHS_DIR: each rank writes its final windows to widths_rank<r>.json there."""
import json
import os
import sys
from pathlib import Path

from ttfs_ext.cli.main import main
from ttfs_ext.train import distributed as dd

_fit = dd.fit_distributed


def _fit_with_hooks(net, *args, on_step=None, **kwargs):
    rank = int(os.environ.get("RANK", "0"))
    fail_at = int(os.environ.get("TTFS_TEST_FAIL_AT_STEP", "0"))

    def step(global_step: int) -> None:
        if on_step is not None:
            on_step(global_step)
        if (global_step == fail_at and dd.restart_count() == 0
                and rank == int(os.environ.get("TTFS_TEST_FAIL_RANK", "1"))):
            sys.stdout.flush()
            os._exit(17)

    history = _fit(net, *args, on_step=step, **kwargs)
    if os.environ.get("TTFS_TEST_WIDTHS_DIR"):
        Path(os.environ["TTFS_TEST_WIDTHS_DIR"], f"widths_rank{rank}.json").write_text(json.dumps(list(net.widths)))
    return history


dd.fit_distributed = _fit_with_hooks

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
