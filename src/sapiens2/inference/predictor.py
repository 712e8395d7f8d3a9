"""Predictors: run a Sapiens2 task model on RGB images and return typed results.

``Predictor(task, model).predict(images)`` works for every task; ``PosePredictor(model)`` and its
siblings are the same with the task fixed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from sapiens2.data.image import check_rgb
from sapiens2.data.metadata import keypoints308
from sapiens2.detect.protocol import Detector, detect_person_boxes
from sapiens2.errors import UsageError
from sapiens2.inference.boxes import MAX_BOXES, as_boxes, boxes_from_mask, whole_image_box
from sapiens2.inference.compiled import CompiledForward
from sapiens2.inference.heatmap import decode_udp, decode_udp_torch, flip_back_heatmaps
from sapiens2.inference.media import read_image
from sapiens2.inference.preprocess import Prepared, to_tensor
from sapiens2.inference.results import Result
from sapiens2.inference.runners import Runner, runner_for, runner_tasks
from sapiens2.limits import DEFAULT as DEFAULT_PIXELS
from sapiens2.models.task import a_task

logger = logging.getLogger(__name__)

DEFAULT_INPUT_SIZE = (1024, 768)  # (H, W) of every released task model

ImageLike = np.ndarray | str | Path | Prepared
MASK_TASK = "seg"  # what --mask-model must be (named in the error for another model)


def _load(source, device, dtype) -> torch.nn.Module:
    from sapiens2.checkpoints import load_model  # checkpoints sit below inference

    return load_model(source, device=device, dtype=dtype)


def _place(model, task: str, device, dtype) -> torch.nn.Module:
    """The task model (loaded if a source) on ``device`` in ``dtype``, in eval mode."""
    from sapiens2.device import resolve_device, resolve_dtype

    if not isinstance(model, torch.nn.Module):
        model = _load(model, device, dtype)
    _check_task_model(model, task)
    if device is not None:
        model = model.to(resolve_device(device))
    dt = resolve_dtype(dtype)
    if dt is not None:
        model = model.to(dt)
    return model.eval()


def _input_size(model, task: str, asked: tuple[int, int] | None) -> tuple[int, int]:
    """The network input (H, W): what the model requires, else ``asked``, else its backbone's
    native size; a multiple of its stride."""
    required = getattr(model, "input_size", None)
    if required is not None and asked is not None and tuple(asked) != tuple(required):
        raise ValueError(
            f"this {task} model requires {required[0]}x{required[1]} inputs; "
            f"input_size {asked[0]}x{asked[1]} cannot be used"
        )
    arch = getattr(model, "arch", None)
    native = getattr(arch, "img_size", None)  # 1024x768; tiny 256x192
    size = tuple(required or asked or native or DEFAULT_INPUT_SIZE)
    stride = getattr(arch, "stride", 16)
    if size[0] % stride or size[1] % stride:
        raise ValueError(f"input_size {size} must be a multiple of the patch size {stride}")
    return size  # type: ignore[return-value]


def _check_task_model(model: torch.nn.Module, task: str, what: str = "model") -> None:
    got = getattr(model, "task", None)
    if got is None:
        raise ValueError(
            f"the {what} is a plain backbone (no task head); `--task {task}` needs {a_task(task)} task checkpoint"
        )
    if got != task:
        raise ValueError(f"the {what} is {a_task(got)} model, but task {task!r} was requested")


class Predictor:
    """Pre-processing, batched forward passes and post-processing for one task; what differs
    between tasks is the task's :class:`~sapiens2.inference.runners.Runner`.

    Args:
        task: a task name (``sapiens2.tasks.task_names()``: pose, seg, normal, pointmap, albedo,
            matting).
        model: a task model (``sapiens2.create_model(..., task=...)`` / ``sapiens2.load_model``) or a
            checkpoint source for ``sapiens2.load_model`` (path or hub id).
        device: where to run (default: where the model is; ``"auto"`` picks cuda/mps/cpu).
        dtype: parameter/compute dtype (``"fp32" | "bf16" | "fp16"``); default: the model's.
        input_size: network input ``(H, W)``; default the model's required size, else its
            backbone's native size (1024×768 for the official archs, 256×192 for the tiny one).
        flip_test: pose only: average with the flipped input (on in the official config).
        mask_model: a segmentation model / source / Predictor: dense tasks mask the background with
            its person mask, pose takes person boxes from its connected components. A model (not a
            Predictor) runs at this predictor's input size.
        detector: pose only: a :class:`~sapiens2.detect.protocol.Detector` for person boxes
            (followed by the official score/NMS filter, ``bbox_thr`` / ``nms_thr``).
        batch_size: images per forward (pose: person crops per forward; the crops of one image
            go together unless there are more than ``batch_size`` of them).
        compile: run the model under ``torch.compile`` (:class:`~sapiens2.inference.compiled.
            CompiledForward`): the first batch of each shape compiles (logged, cached on disk);
            outputs differ from eager in the last bits. Off by default.
        max_boxes: pose only: at most this many person boxes per image (more is a
            :class:`~sapiens2.errors.BoxesError`; None for no limit). Crops are made and run
            ``batch_size`` at a time whatever the count.
        max_pixels: images given as file paths over this many pixels are refused before
            decoding (:mod:`sapiens2.limits`; default 100 MP, None for no limit).
    """

    def __init__(
        self,
        task: str,
        model,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        input_size: tuple[int, int] | None = None,
        flip_test: bool = True,
        mask_model=None,
        detector: Detector | None = None,
        bbox_thr: float = 0.3,
        nms_thr: float = 0.3,
        batch_size: int = 4,
        compile: bool = False,
        max_boxes: int | None = MAX_BOXES,
        max_pixels: int | None = DEFAULT_PIXELS,
    ) -> None:
        self.runner: Runner = runner_for(task)
        if input_size is not None and (
            len(input_size) != 2 or not all(isinstance(v, int) and v > 0 for v in input_size)
        ):
            raise UsageError(f"input_size must be two positive integers (H, W), got {input_size}")
        if max_boxes is not None and max_boxes < 1:
            raise UsageError(f"max_boxes must be >= 1 (or None for no limit), got {max_boxes}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.task = task
        self.max_boxes, self.max_pixels = max_boxes, max_pixels
        self.batch_size, self.flip_test = batch_size, flip_test
        self.detector, self.bbox_thr, self.nms_thr = detector, bbox_thr, nms_thr
        self._local = threading.local()  # per-thread CUDA stream (see _on_own_stream)
        self.model = _place(model, task, device, dtype)
        self._run = CompiledForward(self.model) if compile else self.model
        param = next(self.model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.input_size: tuple[int, int] = _input_size(self.model, task, input_size)
        self.mask_predictor: Predictor | None = None
        if mask_model is not None:
            self.mask_predictor = self._mask_predictor(mask_model, device, dtype)

    def _mask_predictor(self, mask_model, device, dtype) -> Predictor:
        """The segmentation predictor of ``mask_model`` (a Predictor, a model or a source), at
        this predictor's input size unless the model requires its own."""
        if isinstance(mask_model, Predictor):
            if not mask_model.runner.foreground:
                raise ValueError(
                    f"mask_model must be a segmentation predictor, got {a_task(mask_model.task)} one"
                )
            return mask_model
        if not isinstance(mask_model, torch.nn.Module):
            mask_model = _load(mask_model, device if device is not None else self.device, dtype)
        mask_task = getattr(mask_model, "task", None)
        if mask_task is None or not runner_for(mask_task).foreground:
            _check_task_model(mask_model, MASK_TASK, what="mask model")
        return Predictor(
            mask_task,
            mask_model,
            device=self.device,
            input_size=None if getattr(mask_model, "input_size", None) else self.input_size,
            batch_size=self.batch_size,
        )

    # ------------------------------------------------------------------ public API
    def predict(
        self,
        images: ImageLike | Sequence[ImageLike],
        boxes=None,
        masks=None,
        batch_size: int | None = None,
    ) -> Result | list[Result]:
        """Predict on one image or a list of images.

        Args:
            images: ``(H, W, 3)`` uint8 RGB array(s) or image file path(s).
            boxes: pose only: per image ``(N, 4)`` xyxy (or ``(N, 5)`` with scores) person boxes, or
                None for that image (then: detector, mask model, or the whole image). For a single
                image, a single array.
            masks: dense tasks only: per image an ``(H, W)`` foreground mask (or None); overrides
                the mask model for that image.
            batch_size: overrides the predictor's batch size.

        Returns:
            One result (single image in) or a list of results of the task's result type
            (:class:`PoseResult`, :class:`SegResult`, :class:`NormalResult`,
            :class:`PointmapResult`, :class:`AlbedoResult`, :class:`MattingResult`).
        """
        single = isinstance(images, (str, Path, Prepared)) or (
            isinstance(images, np.ndarray) and images.ndim == 3
        )
        items = [images] if single else list(images)
        boxes_list = self._per_image(boxes, len(items), single, "boxes")
        masks_list = self._per_image(masks, len(items), single, "masks")
        if boxes is not None and not self.runner.uses_boxes:
            raise ValueError(
                f"boxes are only used by the {_tasks_phrase(runner_tasks(uses_boxes=True))}"
            )
        if masks is not None and not self.runner.uses_masks:
            raise ValueError(
                f"masks are only used by the {_tasks_phrase(runner_tasks(uses_masks=True))}"
            )
        bs = batch_size or self.batch_size
        with self._on_own_stream():
            if self.runner.resize == "none":
                inputs = [self._as_rgb(img, i) for i, img in enumerate(items)]
            else:
                inputs = [self._as_prepared(img, i) for i, img in enumerate(items)]
            results = self.runner.run(self, inputs, boxes_list, masks_list, bs)
        return results[0] if single else results

    def prepare(self, image: np.ndarray) -> Prepared | np.ndarray:
        """Resize one RGB image for this predictor's dense task (the seg stretch or the
        letterbox of the other dense tasks); :meth:`predict` accepts the result in place of the
        image. Pose inputs depend on the person boxes: the image is returned unchanged.

        Thread-safe, so that it can run on the threads that decode the images.
        """
        return self.runner.prepare(check_rgb(image), self.input_size)

    __call__ = predict

    # ------------------------------------------------------------------ helpers
    def _as_rgb(self, image: ImageLike, i: int) -> np.ndarray:
        if isinstance(image, Prepared):
            return image.rgb
        if isinstance(image, (str, Path)):
            return read_image(image, self.max_pixels)
        return check_rgb(image, name=f"image {i}")

    def _as_prepared(self, image: ImageLike, i: int) -> Prepared:
        if isinstance(image, Prepared):
            want = self.runner.resize
            if image.input.shape[:2] != tuple(self.input_size) or image.resize != want:
                raise ValueError(
                    f"image {i} was prepared with a {image.input.shape[0]}x{image.input.shape[1]} "
                    f"{image.resize}, but this {self.task} predictor needs a "
                    f"{self.input_size[0]}x{self.input_size[1]} {want}"
                )
            return image
        return self.prepare(self._as_rgb(image, i))  # type: ignore[return-value]

    def _on_own_stream(self):
        """On CUDA, run this thread's work on a CUDA stream of its own, so that threads predicting
        at once wait only for their own batches (their forwards still share the GPU)."""
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = torch.cuda.Stream(self.device)
        # weights and anything else made on the default stream are ready before we start
        stream.wait_stream(torch.cuda.default_stream(self.device))
        return torch.cuda.stream(stream)

    @staticmethod
    def _per_image(value, n: int, single: bool, what: str) -> list:
        if value is None:
            return [None] * n
        if single:
            return [value]
        value = list(value)
        if len(value) != n:
            raise ValueError(f"got {len(value)} {what} entries for {n} images")
        return value

    @torch.inference_mode()
    def _forward(self, batch: np.ndarray):
        x = to_tensor(batch, device=self.device, dtype=self.dtype)
        return self._run(x)

    def _foreground(self, rgbs: list[np.ndarray], masks: list, bs: int) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = []
        need = [i for i, m in enumerate(masks) if m is None]
        seg = {}
        if self.mask_predictor is not None and need:
            labels = self.mask_predictor.predict([rgbs[i] for i in need], batch_size=bs)
            seg = {i: r.foreground for i, r in zip(need, labels, strict=True)}
        for i, (rgb, m) in enumerate(zip(rgbs, masks, strict=True)):
            if m is None:
                out.append(seg.get(i))
                continue
            m = np.asarray(m)
            if m.shape != rgb.shape[:2]:
                raise ValueError(f"mask {i} has shape {m.shape}, image is {rgb.shape[:2]}")
            out.append(m > 0)
        return out

    # ------------------------------------------------------------------ pose
    def person_boxes(self, rgb: np.ndarray, boxes=None) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes for one image: the given ones, else the detector's, else the mask model's
        connected components, else the whole image.

        Returns:
            boxes ``(N, 4)`` float32 xyxy (N >= 1 unless ``boxes`` is given and empty), scores ``(N,)``.
        """
        if boxes is not None:
            return as_boxes(boxes, max_boxes=self.max_boxes)
        if self.detector is not None:
            found = detect_person_boxes(
                self.detector, rgb, score_thr=self.bbox_thr, nms_thr=self.nms_thr
            )
            return found.boxes, found.scores
        if self.mask_predictor is not None:
            seg = self.mask_predictor.predict(rgb)
            from_mask = boxes_from_mask(seg.foreground)
            if len(from_mask):
                return from_mask, np.ones(len(from_mask), np.float32)
        return whole_image_box(*rgb.shape[:2]), np.ones(1, np.float32)

    def pose_heatmaps(self, crops: np.ndarray) -> torch.Tensor:
        """Heatmaps ``(N, 308, H/4, W/4)`` float32 (on the model's device) for crops ``(N, H, W, 3)``,
        flip-averaged if enabled."""
        x = to_tensor(crops, device=self.device, dtype=self.dtype)
        n = x.shape[0]
        if self.flip_test:
            x = torch.cat([x, x.flip(-1)])
        with torch.inference_mode():
            hm = self._run(x).float()
        if self.flip_test:
            hm = 0.5 * (hm[:n] + flip_back_heatmaps(hm[n:], keypoints308().flip_indices))
        return hm

    def decode(self, heatmaps: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """UDP + DARK decoding of ``(N, K, h, w)`` heatmaps to network-input keypoints ``(N, K, 2)``
        and scores ``(N, K)``; on an accelerator the blur runs there, on CPU with OpenCV."""
        size = (self.input_size[1], self.input_size[0])
        if heatmaps.device.type == "cpu":
            return decode_udp(heatmaps.numpy(), size)
        return decode_udp_torch(heatmaps, size)


def _tasks_phrase(tasks: tuple[str, ...]) -> str:
    """``"pose task"``, ``"normal, pointmap and albedo tasks"``."""
    if len(tasks) == 1:
        return f"{tasks[0]} task"
    return f"{', '.join(tasks[:-1])} and {tasks[-1]} tasks"


class PosePredictor(Predictor):
    """:class:`Predictor` for 308-keypoint top-down pose."""

    def __init__(self, model, **kwargs) -> None:
        super().__init__("pose", model, **kwargs)


class SegPredictor(Predictor):
    """:class:`Predictor` for 29-class body-part segmentation."""

    def __init__(self, model, **kwargs) -> None:
        super().__init__("seg", model, **kwargs)


class NormalPredictor(Predictor):
    """:class:`Predictor` for surface normals."""

    def __init__(self, model, **kwargs) -> None:
        super().__init__("normal", model, **kwargs)


class PointmapPredictor(Predictor):
    """:class:`Predictor` for metric point maps."""

    def __init__(self, model, **kwargs) -> None:
        super().__init__("pointmap", model, **kwargs)


class AlbedoPredictor(Predictor):
    """:class:`Predictor` for albedo."""

    def __init__(self, model, **kwargs) -> None:
        super().__init__("albedo", model, **kwargs)
