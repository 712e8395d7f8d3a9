"""Run under ``torchrun --nproc_per_node 2`` by test_trainer.py (not collected by pytest).

Trains through the ``sapiens2 train`` command with the given arguments into ``OUT/two``, then
resumes a copy of its step-2 checkpoint into ``OUT/three``: one launch for both runs.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from sapiens2.cli.main import main
from sapiens2.train.distributed import shutdown_distributed


def run() -> None:
    out, argv = Path(sys.argv[1]), sys.argv[2:]
    torch.set_num_threads(1)
    if main([*argv, "--out", str(out / "two")]) != 0:
        sys.exit(1)
    if dist.get_rank() == 0:
        shutil.copytree(out / "two" / "checkpoints" / "step_00000002", out / "ck2")
    dist.barrier()
    if main([*argv, "--out", str(out / "three"), "--resume", str(out / "ck2")]) != 0:
        sys.exit(1)
    shutdown_distributed()


if __name__ == "__main__":
    run()
