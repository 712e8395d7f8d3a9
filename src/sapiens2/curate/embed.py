"""Backbone embeddings: a CLS or mean-pooled patch-token vector from any Sapiens2 backbone.

:class:`BackboneEmbedder` loads lazily and drops the model when pickled (one copy per Ray worker).
Each image runs alone (batch of one) so an embedding never depends on which images shared its batch;
with one intra-op thread the result is bit-identical whatever the number of workers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sapiens2.curate.person import resolve_model_source


class BackboneEmbedder:
    """Image -> L2-normalised float32 embedding ``(D,)``.

    Args:
        model: a backbone or task checkpoint (path, hub id, ``"demo:<task>"``) or module; a task
            model's ``.backbone`` is used.
        pool: ``"cls"`` or ``"mean"`` (over patch tokens).
        input_size: (H, W) the image is resized to.
        device: where the backbone runs.
    """

    def __init__(
        self,
        model: Any,
        pool: str = "cls",
        input_size: tuple[int, int] = (512, 384),
        device: str = "cpu",
    ) -> None:
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        self.source = model
        self.pool = pool
        self.input_size = tuple(input_size)
        self.device = device
        self._backbone = None

    def _load(self):
        if self._backbone is None:
            import torch

            src = self.source
            if isinstance(src, torch.nn.Module):
                model = src
            else:
                from sapiens2.checkpoints import load_model

                model = load_model(resolve_model_source(src), device=self.device, dtype="fp32")
            self._backbone = getattr(model, "backbone", model).to(self.device).float().eval()
        return self._backbone

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (D,) float32 unit vector."""
        import torch

        from sapiens2.inference.preprocess import stretch_resize, to_tensor

        backbone = self._load()
        x = to_tensor(
            stretch_resize(rgb, self.input_size)[None], device=self.device, dtype=torch.float32
        )
        with torch.inference_mode():
            # the backbone knows its prefix tokens (class, storage) and where the patches start
            split = backbone.split_tokens(backbone.forward_features(x).float())
        if self.pool == "cls":
            if split.cls is None:
                raise ValueError("pool 'cls' needs a backbone with a class token; use pool 'mean'")
            v = split.cls[0]
        else:
            v = split.patches[0].mean(0)
        v = v.cpu().numpy().astype(np.float32)
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_backbone"] = None
        return state
