"""Exported models against eager PyTorch on the CPU: file size, error, latency (docs/export.md).

For one task model (the official tiny pose fixture, or a random arch from the table) this exports
``.pt2`` and ``.onnx`` files with ``sapiens2.export.export_model``, loads them back and runs the
eager model and every file on the same input in one process, interleaved (eager, pt2, onnx,
eager, ...). It reports:

- the file size (ONNX external data included);
- the error: max|exported - eager fp32| / max|eager fp32|, and the same against our float64
  forward (which keeps the bfloat16 RoPE roundings), the reference the tests use;
- the latency: the median over rounds of the wall time of one forward, and the ratio to eager
  in the same round (paired, so load on a shared machine cancels out).

ONNX Runtime gets as many intra-op threads as PyTorch has. ``--dtype bf16`` rows need bfloat16
kernels: ONNX Runtime's CPU provider has none, so only the .pt2 file runs.

    python benchmarks/export.py                                  # tiny pose fixture, 256x192
    python benchmarks/export.py --arch sapiens2_0.1b --task seg --size 512 384
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sapiens2
from pipeline import cpu_name
from sapiens2.export import export_model, load_exported

log = logging.getLogger("benchmarks.export")
FIXTURE = (
    Path(__file__).resolve().parents[1]
    / "tests"
    / "fixtures"
    / "official"
    / "tiny_pose.safetensors"
)


def _flat(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in _flat(o)]


def _rel(a, b) -> float:
    """max|a - b| / max|b| over all outputs, in float64."""
    num = max(
        (x.double() - y.double()).abs().max().item()
        for x, y in zip(_flat(a), _flat(b), strict=True)
    )
    den = max(y.double().abs().max().item() for y in _flat(b))
    return num / den


def _size(path: Path) -> int:
    extra = path.with_name(path.name + ".data")
    return path.stat().st_size + (extra.stat().st_size if extra.exists() else 0)


def _model(args) -> tuple[sapiens2.TaskModel, str]:
    if args.arch is None:
        return sapiens2.load_model(FIXTURE), f"official tiny pose fixture ({FIXTURE.name})"
    torch.manual_seed(0)
    model = sapiens2.create_model(args.arch, task=args.task)
    return model, f"{args.arch} {args.task}, random weights (seed 0)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--arch", default=None, help="an arch name (default: the tiny pose fixture)"
    )
    parser.add_argument("--task", default="pose")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--transformers",
        action="store_true",
        help="also save_pretrained() the model and run it with transformers' Sapiens2For<Task>",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    model, what = _model(args)
    size = tuple(args.size) if args.size else (model.input_size or model.arch.img_size)
    dtype = sapiens2.device.resolve_dtype(args.dtype)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    eager = copy.deepcopy(model).to(dtype)
    with torch.no_grad():
        ref32 = model(x)
        ref64 = copy.deepcopy(model).double()(x.double())
    runners = {"eager": lambda: eager(x.to(dtype))}
    sizes, errors = {}, {}
    scratch = tempfile.TemporaryDirectory(prefix="sapiens2-export-bench-")
    tmp = Path(scratch.name)
    for fmt in ("pt2", "onnx"):
        path = tmp / f"model.{fmt}"
        start = time.perf_counter()
        export_model(model, path, dtype=args.dtype, input_size=size)
        log.info("%s export: %.1f s", fmt, time.perf_counter() - start)
        sizes[fmt] = _size(path)
        try:
            loaded = load_exported(path)
        except ValueError as err:  # e.g. ONNX Runtime without bfloat16 kernels
            log.warning("%s: %s", fmt, err)
            continue
        if fmt == "onnx":  # ONNX Runtime as many threads as PyTorch, for a fair ratio
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = torch.get_num_threads()
            session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            runners[fmt] = lambda s=session, n=name: [
                torch.from_numpy(o) for o in s.run(None, {n: x.numpy()})
            ]
        else:
            runners[fmt] = lambda m=loaded: m(x.to(dtype))
    if args.transformers:
        runners["transformers"] = _transformers_runner(model, x, tmp, errors)
    with torch.no_grad():
        for name, run in runners.items():
            out = run()
            errors[name] = (_rel(out, ref32), _rel(out, ref64), *errors.get(name, ())[2:])
            for _ in range(args.warmup):
                run()
        times: dict[str, list[float]] = {n: [] for n in runners}
        for _ in range(args.repeats):
            for name, run in runners.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    runners.clear()  # release the sessions and programs before the files go
    scratch.cleanup()
    rows = []
    for name in times:
        ratios = [t / e for t, e in zip(times[name], times["eager"], strict=True)]
        rows.append(
            {
                "format": name,
                "dtype": args.dtype,
                "file_mb": round(sizes[name] / 2**20, 2) if name in sizes else None,
                "max_rel_err_vs_eager_fp32": errors[name][0],
                "max_rel_err_vs_eager_fp64": errors[name][1],
                "max_rel_err_vs_fp32_rope": errors[name][2] if len(errors[name]) > 2 else None,
                "median_s": statistics.median(times[name]),
                "ratio_to_eager": statistics.median(ratios),
            }
        )
    header = {
        "model": what,
        "input": f"1x3x{size[0]}x{size[1]}",
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "sapiens2": sapiens2.__version__,
        "onnxruntime": _version("onnxruntime"),
        "repeats": args.repeats,
    }
    print(f"\n{what}, input {header['input']}, {header['cpu']}, {header['threads']} threads\n")
    print(
        "| format | dtype | file MB | max err vs eager fp32 | vs eager fp64 | vs fp32-RoPE twin "
        "| median s | time / eager |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        mb = "" if r["file_mb"] is None else f"{r['file_mb']:.1f}"
        twin = r["max_rel_err_vs_fp32_rope"]
        cells = [r["format"], r["dtype"], mb, f"{r['max_rel_err_vs_eager_fp32']:.2e}"]
        cells += [f"{r['max_rel_err_vs_eager_fp64']:.2e}", "" if twin is None else f"{twin:.2e}"]
        cells += [f"{r['median_s']:.3f}", f"{r['ratio_to_eager']:.2f}"]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"header": header, "rows": rows}, indent=1) + "\n")
    return 0


def _transformers_runner(model, x, tmp: Path, errors: dict):
    """transformers' task class loaded from our save_pretrained folder; also records its error
    against our model with float32 RoPE (what transformers computes)."""
    from dataclasses import replace

    import transformers

    from sapiens2.checkpoints.transformers import TRANSFORMERS_CLASSES, save_pretrained
    from sapiens2.models import build_model

    folder = save_pretrained(model, tmp / "hf")
    cls = getattr(transformers, TRANSFORMERS_CLASSES[model.task])
    theirs = cls.from_pretrained(folder, attn_implementation="sdpa").eval()
    twin = build_model(replace(model.arch, rope_dtype="fp32"), model.task, model.head_config)
    twin.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    twin.backbone.rope_embed.reset_parameters()

    def run():
        return [v for v in theirs(pixel_values=x).values() if torch.is_tensor(v)]

    with torch.no_grad():
        errors["transformers"] = (None, None, _rel(run(), twin.eval()(x)))
    return run


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


if __name__ == "__main__":
    sys.exit(main())
