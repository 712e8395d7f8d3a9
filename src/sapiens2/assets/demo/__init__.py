"""The five demo checkpoints (``<task>.safetensors``, official layout, bfloat16)."""
