"""GPU checks for a lent accelerator: golden parity on CUDA and backbone throughput.

python tools/gpu_check.py --fixtures tests/fixtures/official --out report.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

import sapiens2


def parity(fixtures: Path, device: str) -> dict:
    out = {}
    for name in ("tiny_backbone", "tiny_backbone4k", "tiny_seg", "tiny_pose", "tiny_normal"):
        if not (fixtures / f"{name}.safetensors").is_file():
            continue
        io = load_file(fixtures / f"{name}.io64.safetensors")  # the official float64 outputs
        x = io["input"].to(device)
        ref = io["output.1" if name == "tiny_backbone" else "output.0"]
        row = {}
        for dtype in ("fp32", "bf16"):
            model = sapiens2.load_model(
                fixtures / f"{name}.safetensors", device=device, dtype=dtype
            )
            with torch.no_grad():
                if name == "tiny_backbone":
                    y = model.forward_features(x.to(model.ln1.weight.dtype))
                else:
                    y = model(x.to(next(model.parameters()).dtype))
            d = (y.double().cpu() - ref.double()).abs()
            scale = ref.abs().max().item()
            row[dtype] = {"max_rel": d.max().item() / scale, "mean_rel": d.mean().item() / scale}
        out[name] = row
    return out


def throughput(arch: str, batch: int, device: str, compile_: bool, iters: int = 10) -> dict:
    torch.manual_seed(0)
    model = sapiens2.create_model(arch, device=device, dtype="bf16")
    x = torch.randn(batch, 3, 1024, 768, device=device, dtype=torch.bfloat16)
    fwd = model
    t0 = time.perf_counter()
    if compile_:
        fwd = torch.compile(model)
    with torch.inference_mode():
        for _ in range(3):
            fwd(x)
        torch.cuda.synchronize()
        warm = time.perf_counter() - t0
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fwd(x)
        end.record()
        torch.cuda.synchronize()
    ms = start.elapsed_time(end) / iters
    row = {"arch": arch, "batch": batch, "compile": compile_, "ms_per_batch": ms,
           "images_per_s": batch * 1000 / ms, "warmup_s": warm,
           "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30}  # fmt: skip
    del model, fwd
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return row


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--fixtures", type=Path, default=Path("tests/fixtures/official"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--skip-speed", action="store_true")
    args = p.parse_args()
    device = "cuda"
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    report["parity"] = parity(args.fixtures, device)
    args.out.write_text(json.dumps(report, indent=1))
    if not args.skip_speed:
        rows = []
        for arch in ("sapiens2_0.4b", "sapiens2_1b"):
            for batch in (1, 8):
                for comp in (False, True) if (arch, batch) == ("sapiens2_0.4b", 8) else (False,):
                    try:
                        rows.append(throughput(arch, batch, device, comp))
                    except Exception as err:  # report and go on: one failure must not lose the rest
                        rows.append(
                            {
                                "arch": arch,
                                "batch": batch,
                                "compile": comp,
                                "error": repr(err)[:300],
                            }
                        )
                    report["speed"] = rows
                    args.out.write_text(json.dumps(report, indent=1))
                    print(rows[-1], flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
