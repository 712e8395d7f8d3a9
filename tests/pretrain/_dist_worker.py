"""Run under ``torchrun --nproc_per_node 2`` by test_distributed.py (not collected by pytest).

Trains the tiny recipe with FSDP2 for 3 steps (checkpoints at steps 2 and 3) and exports; then
resumes a copy of the run from its step-2 checkpoint and redoes step 3; then runs one step with
KoLeo on. Rank 0 writes the losses.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from sapiens2.pretrain.recipes import get_recipe
from sapiens2.pretrain.trainer import Pretrainer
from sapiens2.train.distributed import init_distributed, shutdown_distributed


def main() -> None:
    data, out, *sets = sys.argv[1:]
    out = Path(out)
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    recipe = get_recipe("tiny", sets)
    first = Pretrainer(recipe, data, out / "a", info)
    hist = first.train()
    first.export()
    if info.is_main:
        shutil.copytree(out / "a", out / "b")
        shutil.rmtree(out / "b" / "checkpoints" / "step_00000003")
        (out / "b" / "log.jsonl").unlink()
    dist.barrier()
    second = Pretrainer(recipe, data, out / "b", info)
    resumed = second.train()
    # one step with KoLeo on (its batch is gathered over the ranks)
    koleo = Pretrainer(
        get_recipe("tiny", [*sets, "loss.koleo=0.04", "max_steps=1"]), data, out / "k", info
    ).train()
    if info.is_main:
        (out / "losses.json").write_text(
            json.dumps({"run": hist, "resumed": resumed, "koleo": koleo})
        )
    shutdown_distributed()


if __name__ == "__main__":
    main()
