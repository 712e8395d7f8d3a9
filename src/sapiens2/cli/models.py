"""``sapiens2 models``: the arch table with parameter counts."""

from __future__ import annotations

import argparse

from sapiens2.tasks import task_names

NAME = "models"
HELP = "list the Sapiens2 architectures with their sizes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=task_names(), help="also count this task's head")


def run(args: argparse.Namespace) -> int:
    from sapiens2.models import ARCHS, create_model

    rows = [("arch", "params", "width", "depth", "heads", "kv heads", "ffn", "stride")]
    for name, cfg in ARCHS.items():
        model = create_model(name, task=args.task, device="meta")
        n = sum(p.numel() for p in model.parameters())
        kv = (
            "-"
            if cfg.num_kv_heads is None
            else f"{cfg.num_kv_heads} (blocks {cfg.full_attn_early}-{cfg.depth - cfg.full_attn_late - 1})"
        )
        rows.append(
            (
                name,
                f"{n:,}",
                str(cfg.embed_dim),
                str(cfg.depth),
                str(cfg.num_heads),
                kv,
                str(cfg.ffn_dim),
                str(cfg.stride),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0
