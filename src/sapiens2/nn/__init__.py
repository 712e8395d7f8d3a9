"""Layer modules of the Sapiens2 family, one module per layer family (imports only torch)."""

from sapiens2.nn.attention import GroupedQueryAttention
from sapiens2.nn.block import TransformerBlock
from sapiens2.nn.ffn import SwiGLU
from sapiens2.nn.layer_scale import LayerScale
from sapiens2.nn.norm import RMSNorm, RMSNorm2d
from sapiens2.nn.patch_embed import PatchEmbed
from sapiens2.nn.precision import compute_dtype, cpu_upcast, set_cpu_upcast
from sapiens2.nn.rope import RopePositionEmbedding, apply_rope
from sapiens2.nn.window_tokenizer import WindowTokenizer

__all__ = [
    "GroupedQueryAttention",
    "LayerScale",
    "PatchEmbed",
    "RMSNorm",
    "RMSNorm2d",
    "RopePositionEmbedding",
    "SwiGLU",
    "TransformerBlock",
    "WindowTokenizer",
    "apply_rope",
    "compute_dtype",
    "cpu_upcast",
    "set_cpu_upcast",
]
