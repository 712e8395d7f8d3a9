"""The pre-processing contract of an exported model: a JSON file next to it (``<file>.json``,
e.g. ``pose.onnx.json``), also embedded in the file (ONNX metadata ``sapiens2``, ``.pt2`` extra
file ``sapiens2.json``).

It says what the graph takes (a normalised ``(B, 3, H, W)`` NCHW tensor: size, dtype, channel
order, mean/std, how a picture is resized) and what it returns (names, shapes, dtypes, in order),
which model it came from and which sapiens2 wrote it. ``sapiens2 predict --model FILE`` reads it
to run the same pre- and post-processing as for the checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sapiens2.export.kinds import RESIZES, get_kind

FORMAT = "sapiens2-export"
VERSION = 1
FILE_FORMATS = {".onnx": "onnx", ".pt2": "pt2"}
EMBEDDED_NAME = "sapiens2"  # ONNX metadata key; the .pt2 extra file is sapiens2.json

Dim = int | str  # a size, or the name of a dynamic dimension ("batch")


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: its name, shape (``"batch"`` when dynamic) and dtype name."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str


@dataclass(frozen=True)
class Contract:
    """What an exported file computes and how to feed it (see the module docstring).

    Attributes:
        kind: a task name or ``"detector"`` (:data:`sapiens2.export.kinds.KINDS`).
        file_format: ``"onnx"`` or ``"pt2"``.
        input: the one input, ``(B, 3, H, W)``.
        outputs: in the order of the model's flattened ``forward`` result.
        layout, channel_order, mean, std: ``(pixels - mean) / std`` per channel on 0-255 values,
            channels in ``channel_order``, NCHW.
        resize: how a picture becomes the input (a key of :data:`sapiens2.export.kinds.RESIZES`).
        rope: how the backbone's rotary embedding rounds (``"bf16"`` for the released models: q/k
            rounded to bfloat16 for the rotation, written as casts; None for the detector).
        model: what the model was: ``arch`` name, and for the detector its ``config`` and
            ``test_config`` (for the post-processing).
        source: the ``--model`` the file was exported from.
        sapiens2_version, torch_version: of the exporting installation.
        opset: the ONNX opset (None for .pt2).
    """

    kind: str
    file_format: str
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channel_order: str
    resize: str
    rope: str | None
    model: dict[str, Any]
    source: str
    sapiens2_version: str
    torch_version: str
    opset: int | None = None
    layout: str = "NCHW"
    format: str = FORMAT
    version: int = VERSION
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def input_size(self) -> tuple[int, int]:
        """``(H, W)`` of the input."""
        h, w = self.input.shape[2:]
        return int(h), int(w)

    @property
    def dynamic_batch(self) -> bool:
        return not isinstance(self.input.shape[0], int)

    @property
    def batch_size(self) -> int | None:
        """The fixed batch size, None when the batch is dynamic."""
        b = self.input.shape[0]
        return b if isinstance(b, int) else None

    def to_json(self) -> str:
        data = asdict(self)
        data["resize_means"] = RESIZES[self.resize]
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str, where: str = "contract") -> Contract:
        """Parses and checks a contract; the error names what is wrong."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not JSON ({err})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{where}: not a sapiens2 export contract (no format {FORMAT!r})")
        if data.get("version") != VERSION:
            raise ValueError(
                f"{where}: contract version {data.get('version')!r}; this sapiens2 reads "
                f"version {VERSION}"
            )
        data.pop("resize_means", None)
        try:
            data["input"] = _spec(data["input"])
            data["outputs"] = tuple(_spec(o) for o in data["outputs"])
            data["mean"], data["std"] = tuple(data["mean"]), tuple(data["std"])
            contract = cls(**data)
        except (KeyError, TypeError) as err:
            raise ValueError(f"{where}: malformed contract ({err})") from None
        kind = get_kind(contract.kind)
        if len(contract.input.shape) != 4 or contract.input.shape[1] != 3:
            raise ValueError(f"{where}: input shape {contract.input.shape} is not (B, 3, H, W)")
        if tuple(o.name for o in contract.outputs) != kind.output_names:
            raise ValueError(
                f"{where}: outputs {[o.name for o in contract.outputs]} are not those of a "
                f"{contract.kind} model {list(kind.output_names)}"
            )
        if contract.file_format not in FILE_FORMATS.values():
            raise ValueError(f"{where}: unknown file_format {contract.file_format!r}")
        return contract


def _spec(d: dict) -> TensorSpec:
    return TensorSpec(d["name"], tuple(d["shape"]), d["dtype"])


def contract_path(model_file: str | Path) -> Path:
    """Where the contract of ``model_file`` is written: ``pose.onnx`` -> ``pose.onnx.json``."""
    p = Path(model_file)
    return p.with_name(p.name + ".json")


def file_format(path: str | Path) -> str:
    """``"onnx"`` or ``"pt2"`` from the file suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in FILE_FORMATS:
        raise ValueError(f"{path}: an exported model file ends in .onnx or .pt2")
    return FILE_FORMATS[suffix]
