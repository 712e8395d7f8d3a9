"""Backbone embeddings take the class token or the mean of the patch tokens, wherever the backbone's
prefix tokens end (not a hard-coded count)."""

from __future__ import annotations

import numpy as np
import torch

import sapiens2
from sapiens2.curate.embed import BackboneEmbedder
from sapiens2.inference.preprocess import stretch_resize, to_tensor


def test_embeddings_follow_the_backbones_prefix_tokens():
    rgb = np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    for storage in (8, 2):
        backbone = sapiens2.create_model("sapiens2_tiny", num_storage_tokens=storage)
        cls = BackboneEmbedder(backbone, pool="cls", input_size=(64, 48))(rgb)
        mean = BackboneEmbedder(backbone, pool="mean", input_size=(64, 48))(rgb)
        with torch.no_grad():
            tokens = backbone.forward_features(to_tensor(stretch_resize(rgb, (64, 48))[None]))[0]
        want_cls, want_mean = tokens[0], tokens[1 + storage :].mean(0)
        for got, want in ((cls, want_cls), (mean, want_mean)):
            want = (want / want.norm()).numpy()
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert tokens.shape[0] == 1 + storage + 4 * 3
