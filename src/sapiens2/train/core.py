"""What every training run shares, fine-tuning (``sapiens2 train``) and pretraining
(``sapiens2 pretrain``) alike: the output folder, the log, the loss window, the non-finite guard,
checkpoints and resuming.

``OUT/`` holds ``recipe.json``; ``log.jsonl``, one JSON object per logged step (``step``, ``loss``
and every loss term, ``grad_norm``: means over the steps since the previous line, averaged over
ranks; ``lr`` and the trainer's other schedules at that step; ``sec_per_step``,
``samples_per_sec``) and one per validation (``{"step", "val": {...}}``); ``tensorboard/`` when
TensorBoard is installed; ``checkpoints/step_XXXXXXXX/`` (:mod:`sapiens2.train.checkpointing`).

Loss terms and gradient norms stay on the training device between logged steps (no host sync, no
collective); at a logged step they are averaged over ranks in one all-reduce on the device the
process group expects (:func:`sapiens2.train.distributed.all_reduce_mean`) and read once. A
non-finite mean stops the run with :class:`NonFiniteError` before anything is saved or exported
from it, so the newest checkpoint is always a finite one; every checkpoint write checks first.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sapiens2.errors import Sapiens2Error
from sapiens2.train import distributed as dist_utils
from sapiens2.train.checkpointing import (
    CheckpointError,
    Manifest,
    complete_checkpoints,
    fault_point,
    latest_checkpoint,
    load_checkpoint,
    read_manifest,
    remove_leftovers,
    save_checkpoint,
)

__all__ = [
    "LOG_FILE",
    "LossWindow",
    "NonFiniteError",
    "TrainingRun",
    "check_enough_data",
]

logger = logging.getLogger(__name__)

LOG_FILE = "log.jsonl"


class NonFiniteError(Sapiens2Error, RuntimeError):
    """A loss term or the gradient norm became NaN or infinite; nothing was saved from it."""


def check_enough_data(num_samples: int, batch_size: int, world_size: int, what: str) -> None:
    """Raises a ValueError that says what to do when ``num_samples`` cannot fill one batch of
    ``batch_size`` on each of ``world_size`` processes (incomplete batches are dropped)."""
    per_rank = num_samples // world_size
    if per_rank >= batch_size:
        return
    if per_rank == 0:
        raise ValueError(
            f"{what} has {num_samples} samples, fewer than the {world_size} processes: add data "
            "or start fewer processes"
        )
    raise ValueError(
        f"{what} has {num_samples} samples, fewer than one batch of {batch_size} per process x "
        f"{world_size} process(es): pass --set batch_size={per_rank} (or smaller), or add data"
    )


class LossWindow:
    """Per-step values (loss terms, gradient norm) summed on their device since the last log."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0

    def add(self, values: Mapping[str, torch.Tensor], scale: float = 1.0) -> None:
        """Adds ``scale * value`` for each 0-dim tensor (e.g. ``1 / grad_accum`` per
        micro-batch); no host sync."""
        for k, v in values.items():
            v = v.detach().float() * scale
            self.sums[k] = self.sums[k] + v if k in self.sums else v

    def end_step(self) -> None:
        self.steps += 1

    def reduced(self) -> tuple[list[str], torch.Tensor]:
        """Sorted names and their per-step means, averaged over ranks (a 1-D tensor, on the
        collective device; every rank must call this at the same step)."""
        names = sorted(self.sums)
        if not names:
            return names, torch.zeros(0)
        vec = torch.stack([self.sums[k] for k in names]) / max(1, self.steps)
        return names, dist_utils.all_reduce_mean(vec)

    def mean(self) -> dict[str, float]:
        """:meth:`reduced` read to the host (the one sync of a logged step)."""
        names, vec = self.reduced()
        return dict(zip(names, vec.tolist(), strict=True))

    def reset(self) -> None:
        self.sums, self.steps = {}, 0


def _finite_problem(means: Mapping[str, float]) -> str | None:
    bad = {k: v for k, v in means.items() if not math.isfinite(v)}
    if not bad:
        return None
    what = "the gradient norm" if set(bad) == {"grad_norm"} else "the loss"
    return f"{what} is not finite (" + ", ".join(f"{k}={v}" for k, v in bad.items()) + ")"


class TrainingRun:
    """The bookkeeping of one run in ``out``: log, loss window, checkpoints, resume.

    Every rank creates one; rank 0 writes the files. The trainer calls :meth:`resume_point` and
    :meth:`restore` once, then per step :attr:`window` ``.add(...)`` and :meth:`end_step`, and
    :meth:`save` at the end.

    Args:
        out: the output folder (created; an existing file there is an error).
        info: the process group info.
        kind: ``"train"`` or ``"pretrain"`` (checkpoints of the other kind are refused).
        recipe: a recipe dataclass with ``name``, ``log_every``, ``save_every``,
            ``keep_checkpoints`` and ``to_dict()``.
        samples_per_step: global samples per optimiser step (for ``samples_per_sec``).
    """

    def __init__(
        self,
        out: str | Path,
        info: dist_utils.DistInfo,
        *,
        kind: str,
        recipe: Any,
        samples_per_step: int,
    ) -> None:
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"--out {self.out} is a file; give a folder for the run")
        self.info, self.kind, self.recipe = info, kind, recipe
        self.samples_per_step = samples_per_step
        self.ckpt_root = self.out / "checkpoints"
        self.window = LossWindow()
        self.history: list[dict[str, Any]] = []
        self.saved_step: int | None = None  # the newest checkpoint in ckpt_root of this run
        self._log_file = None
        self._tb = None
        self._bar = None
        self._t0 = time.perf_counter()
        self._last_step = 0
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=1))
            remove_leftovers(self.ckpt_root)

    # ---------------------------------------------------------------- resume
    def resume_point(self, resume: str | Path | None) -> Manifest | None:
        """The checkpoint to resume from: ``"auto"`` the newest complete one in
        ``OUT/checkpoints`` (None when there is none), a folder that one, None/``"none"`` none
        (an error if ``OUT`` already holds checkpoints of another start).

        Raises:
            CheckpointError: an incomplete folder, or one of another kind of run or recipe.
        """
        if resume is None or str(resume) == "none":
            existing = complete_checkpoints(self.ckpt_root)
            if existing and self.saved_step is None:
                raise CheckpointError(
                    f"{self.ckpt_root} already holds checkpoints (newest: {existing[-1].path.name})"
                    "; continue them with --resume auto, or give another --out"
                )
            return None
        manifest = (
            latest_checkpoint(self.ckpt_root) if str(resume) == "auto" else read_manifest(resume)
        )
        if manifest is None:
            return None
        if manifest.kind != self.kind:
            raise CheckpointError(
                f"{manifest.path} is a {manifest.kind} checkpoint; `sapiens2 {self.kind}` "
                f"resumes only {self.kind} checkpoints"
            )
        if manifest.recipe != self.recipe.name:
            raise CheckpointError(
                f"{manifest.path} was written by recipe {manifest.recipe!r}, not "
                f"{self.recipe.name!r}: resume with the same recipe, or give another --out"
            )
        return manifest

    def restore(
        self,
        manifest: Manifest,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loader: Any,
    ) -> int:
        """Loads model, optimiser, loader position and this rank's RNG states; returns the step."""
        rank_state = load_checkpoint(manifest, model, optimizer)
        loader.load_state_dict(manifest.loader)
        if rank_state is not None:
            dist_utils.set_rng_state(rank_state["rng"])
        else:
            logger.warning(
                "%s was written by %d process(es), this run has %d: rank %d keeps fresh RNG "
                "states (the data order continues exactly; random augmentations do not)",
                manifest.path,
                manifest.world_size,
                self.info.world_size,
                self.info.rank,
            )
        if manifest.path.parent.resolve() == self.ckpt_root.resolve():
            self.saved_step = manifest.step
        logger.info("resumed from %s at step %d", manifest.path, manifest.step)
        return manifest.step

    # ---------------------------------------------------------------- the loop
    def start(self, step: int, max_steps: int, desc: str) -> None:
        """Opens the log (appending) and the progress bar for steps ``step + 1 .. max_steps``."""
        self._last_step, self.max_steps = step, max_steps
        self._t0 = time.perf_counter()
        self.window.reset()
        if not self.info.is_main:
            return
        self._log_file = open(self.out / LOG_FILE, "a")  # noqa: SIM115
        self._tb = self._tensorboard()
        from tqdm import tqdm

        self._bar = tqdm(total=max_steps, initial=step, desc=desc, unit="step", disable=None)

    def end_step(self, step: int, scalars: Mapping[str, float]) -> dict[str, Any] | None:
        """Closes optimiser step ``step`` (1-based); at a logged step (every ``log_every`` and
        the last) writes and returns the log row on every rank, else returns None.

        Raises:
            NonFiniteError: a logged mean is NaN or infinite (after writing its row).
        """
        fault_point("step", step)
        self.window.end_step()
        if self._bar is not None:
            self._bar.update(1)
        if step % self.recipe.log_every and step != self.max_steps:
            return None
        return self.log(step, scalars)

    def log(self, step: int, scalars: Mapping[str, float]) -> dict[str, Any]:
        """Writes the row of ``step`` (means of the window, ``scalars``) and resets the window."""
        means = self.window.mean()
        n = max(1, step - self._last_step)
        elapsed = time.perf_counter() - self._t0
        row = {"step": step, **means, **scalars}
        row.update(sec_per_step=elapsed / n, samples_per_sec=n * self.samples_per_step / elapsed)
        self.history.append(row)
        if self._log_file is not None:
            self._log_file.write(json.dumps(row) + "\n")
            self._log_file.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k != "step":
                    self._tb.add_scalar(f"train/{k}", v, step)
        if self._bar is not None:
            if self._bar.disable:
                terms = " ".join(f"{k}={v:.4g}" for k, v in means.items())
                logger.info("step %d/%d %s lr=%.3g", step, self.max_steps, terms, row.get("lr", 0))
            elif "loss" in means:
                self._bar.set_postfix(loss=f"{means['loss']:.4f}")
        self.window.reset()
        self._last_step, self._t0 = step, time.perf_counter()
        self._raise_if_not_finite(step, means)
        return row

    def log_validation(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Appends ``{"step", "val": {...}}`` with the scalar metrics (rank 0)."""
        flat = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        logger.info(
            "step %d validation: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in flat.items())
        )
        if self._log_file is not None:
            self._log_file.write(json.dumps({"step": step, "val": flat}) + "\n")
            self._log_file.flush()
        if self._tb is not None:
            for k, v in flat.items():
                self._tb.add_scalar(f"val/{k}", v, step)

    def _raise_if_not_finite(self, step: int, means: Mapping[str, float]) -> None:
        problem = _finite_problem(means)
        if problem is None:
            return
        newest = latest_checkpoint(self.ckpt_root)
        last = f"the newest checkpoint is {newest.path}" if newest else "no checkpoint was written"
        raise NonFiniteError(
            f"step {step}: {problem}; stopped without saving or exporting it ({last}). Lower "
            "the learning rate or check the data, then start again (--resume auto continues "
            "from the newest checkpoint)"
        )

    def check_finite(self, step: int) -> None:
        """Raises :class:`NonFiniteError` when a step since the last log had a non-finite loss or
        gradient (a collective: every rank calls it at the same step)."""
        if self.window.steps:
            self._raise_if_not_finite(step, self.window.mean())

    def maybe_save(
        self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, loader: Any
    ) -> None:
        """Saves every ``save_every`` steps (0: never here; :meth:`save` at the end)."""
        every = self.recipe.save_every
        if every and step % every == 0:
            self.save(step, model, optimizer, loader)

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loader: Any,
        extra: dict[str, Any] | None = None,
    ) -> Path:
        """Checks the steps since the last log are finite, then writes the checkpoint of
        ``step`` (unless this run already did or resumed from it)."""
        self.check_finite(step)
        path = self.ckpt_root / f"step_{step:08d}"
        if self.saved_step == step and path.is_dir():
            return path
        save_checkpoint(
            self.ckpt_root,
            step,
            model,
            optimizer,
            kind=self.kind,
            recipe=self.recipe.name,
            loader=loader.state_dict(),
            rank_state={"rng": dist_utils.rng_state()},
            extra=extra,
            keep=self.recipe.keep_checkpoints,
        )
        self.saved_step = step
        return path

    def close(self) -> None:
        for handle in (self._bar, self._log_file, self._tb):
            if handle is not None:
                handle.close()
        self._bar = self._log_file = self._tb = None

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.debug("tensorboard is not installed; logging to %s only", LOG_FILE)
            return None
        return SummaryWriter(str(self.out / "tensorboard"))
