"""Procedural synthetic humans with exact labels for the tasks, matting included (docs/synthetic.md).

Modules: ``primitives`` (analytic ray casting), ``body`` (skeleton, pose, primitives),
``labels`` (308 keypoints with visibility, 29-class part regions), ``render`` (scene, camera,
shading, one sample), ``writer`` (folders / tar shards), ``preview`` (a picture of the labels).
"""

from sapiens2.data.synth.render import SynthConfig, SynthSample, render_sample
from sapiens2.data.synth.writer import WriteConfig, sample_rng, write_dataset

__all__ = [
    "SynthConfig",
    "SynthSample",
    "WriteConfig",
    "render_sample",
    "sample_rng",
    "write_dataset",
]
