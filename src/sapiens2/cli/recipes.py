"""``sapiens2 recipes``: list the fine-tuning recipes, or show one."""

from __future__ import annotations

import argparse
import json

NAME = "recipes"
HELP = "list fine-tuning recipes (<task>-<size>) or show one with its fields"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="show this recipe's fields")


def run(args: argparse.Namespace) -> int:
    from sapiens2.train.recipes import RECIPES, get_recipe

    if args.name:
        print(json.dumps(get_recipe(args.name).to_dict(), indent=1))
        return 0
    print(
        f"{'recipe':<14} {'arch':<16} {'input':<11} {'steps':>6} {'lr':>7} {'decay':>5} {'strategy':<6} precision"
    )
    for name, r in RECIPES.items():
        size = f"{r.input_size[0]}x{r.input_size[1]}"
        print(
            f"{name:<14} {r.arch:<16} {size:<11} {r.max_steps:>6} {r.lr:>7.0e} "
            f"{r.layer_decay:>5} {r.strategy:<6} {r.precision}{'' if r.official else ' *'}"
        )
    print("* not an official config: tiny is our CPU recipe; 0.1b and 1b-4k borrow 0.4b / 1b")
    return 0
