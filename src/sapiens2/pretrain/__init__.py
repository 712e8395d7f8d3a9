"""Pretraining: masked reconstruction + self-distillation (paper §2), 1K and 4K, single to FSDP2.

Modules follow the paper's steps: :mod:`masking`, :mod:`views` (multi-crop), :mod:`mae`,
:mod:`distill`, :mod:`networks` (student / teacher), :mod:`objective`, :mod:`recipes`,
:mod:`trainer`, and :mod:`probe` (frozen-backbone dense probing for checkpoint selection).
"""

from sapiens2.pretrain.recipes import RECIPES, PretrainRecipe, get_recipe

__all__ = ["RECIPES", "PretrainRecipe", "get_recipe"]
