"""What each exportable model takes and returns: one entry per model kind.

A kind names the tensors of the exported graph and how a picture becomes its input. Exporting a
new task model needs one entry here (its output names, in ``forward``'s order, and its resize).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sapiens2.inference.preprocess import MEAN, STD
from sapiens2.tasks import all_tasks

# How a picture becomes the network input (what `sapiens2 predict` does before the forward):
RESIZES = {
    "topdown_crop": "each person box is cropped with the UDP affine warp to the input size",
    "stretch": "the whole picture is resized to the input size (aspect ratio not kept)",
    "letterbox": "the picture is resized to fit the input size, keeping its aspect ratio, and "
    "padded with zeros on both sides",
    "keep_ratio_pad": "the picture is resized so that it fits the square input, keeping its "
    "aspect ratio, and padded bottom/right with the pad value",
}


@dataclass(frozen=True)
class ExportKind:
    """One exportable kind of model.

    Attributes:
        name: the task name (or ``"detector"``).
        output_names: the graph outputs, in the order of the model's flattened ``forward`` result.
        resize: a key of :data:`RESIZES`.
        channel_order: of the input channels.
        mean, std: ``(x - mean) / std`` per channel (in ``channel_order``) on 0-255 pixel values.
        output_groups: when ``forward`` returns lists, their lengths (the detector: three class
            maps, then three box maps); None for a tensor or a tuple of tensors.
    """

    name: str
    output_names: tuple[str, ...]
    resize: str
    channel_order: Literal["RGB", "BGR"] = "RGB"
    mean: tuple[float, float, float] = MEAN
    std: tuple[float, float, float] = STD
    output_groups: tuple[int, ...] | None = None


# The detector's mean/std and levels come from the loaded detector (its test config), see
# sapiens2.export.exporter.
# A task's graph outputs are named by its task module (TaskSpec.export_outputs); its resize is its
# inference runner's (pose makes top-down crops).
_RESIZE_OF_RUNNER = {"none": "topdown_crop", "stretch": "stretch", "letterbox": "letterbox"}

KINDS: dict[str, ExportKind] = {
    k.name: k
    for k in (
        *(
            ExportKind(t.name, t.export_outputs, _RESIZE_OF_RUNNER[t.runner.resize])
            for t in all_tasks()
        ),
        ExportKind(
            "detector",
            tuple(f"{what}_s{s}" for what in ("cls_score", "bbox_pred") for s in (8, 16, 32)),
            "keep_ratio_pad",
            channel_order="BGR",
            output_groups=(3, 3),
        ),
    )
}


def get_kind(name: str) -> ExportKind:
    """The :class:`ExportKind` called ``name``; the error lists the known ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(
            f"cannot export {name!r} models; known kinds: {', '.join(KINDS)}"
        ) from None
