"""Backbone forward speed: sapiens2 against the reference-style code and transformers.

Every implementation gets the same weights (ours, randomly initialised with a fixed seed; the
others load them: the official-style model with the same keys, ``transformers.Sapiens2Model``
through the official<->transformers key map) and the same input. Timings are interleaved in one
process (ours, baseline, ours, baseline, ... per repeat) and the median is reported, so load from
other processes on a shared machine hits every implementation alike. All implementations are timed
on the full token sequence after the final norm (``Sapiens2.forward_features``).

Examples::

    python benchmarks/backbone.py                                  # 0.4B, 1024x768, fp32+bf16, CPU
    python benchmarks/backbone.py --quick --device cuda             # the GPU table (< 4 minutes)
    python benchmarks/backbone.py --archs sapiens2_1b --dtypes bf16 --batch 1 8 --device cuda \\
        --compile --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sapiens2
from official_style import OfficialStyleSapiens2
from sapiens2.checkpoints.transformers import official_to_transformers
from sapiens2.models.configs import ArchConfig, get_arch

log = logging.getLogger("benchmarks.backbone")

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
IMPLS = ("ours", "official", "transformers")


# ---------------------------------------------------------------------------------------- FLOPs
def forward_flops(cfg: ArchConfig, h: int, w: int, batch: int = 1) -> float:
    """Multiply-add FLOPs (2 per MAC) of one backbone forward: patch embedding, projections,
    attention products (``4 N^2 D`` per block), SwiGLU; norms and elementwise work not counted."""
    d, f, hd = cfg.embed_dim, cfg.ffn_dim, cfg.head_dim
    hp, wp = h // cfg.patch_size, w // cfg.patch_size
    flops = 2 * hp * wp * cfg.in_channels * cfg.patch_size**2 * d

    def block(n: int, kv: int) -> float:
        proj = 2 * n * d * (d + 2 * kv * hd) + 2 * n * d * d
        attn = 4 * n * n * d
        ffn = 2 * n * d * 2 * f + 2 * n * f * d
        return proj + attn + ffn

    if cfg.use_tokenizer:
        s = cfg.tokenizer_window
        windows = (hp // s) * (wp // s)
        flops += windows * cfg.tokenizer_depth * block(1 + s * s, cfg.num_heads)
        hp, wp = hp // s, wp // s
    n = cfg.num_prefix_tokens + hp * wp
    flops += sum(block(n, cfg.kv_heads(i)) for i in range(cfg.depth))
    return float(flops * batch)


# ---------------------------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakRSS:
    """Samples the process's resident memory in a thread (CPU runs): peak minus start, bytes."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> PeakRSS:
        self.start = self.rss()
        self.peak = self.start
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def delta(self) -> int:
        return self.peak - self.start


def timed_forward(
    fn, x: torch.Tensor, device: torch.device
) -> tuple[float, float, int, torch.Tensor]:
    """One forward: (wall seconds, process CPU seconds, peak memory bytes, output).

    CUDA: memory is the peak allocated (weights included). CPU: the peak growth of the resident
    set during the call (activations, workspaces). The CPU time (all threads) is steadier than
    the wall time when other processes compete for the cores."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        t, c = time.perf_counter(), time.process_time()
        out = fn(x)
        sync(device)
        mem = torch.cuda.max_memory_allocated(device)
        return time.perf_counter() - t, time.process_time() - c, mem, out
    use_rss = sys.platform.startswith("linux")
    with PeakRSS() if use_rss else contextlib.nullcontext() as mem:
        t, c = time.perf_counter(), time.process_time()
        out = fn(x)
        dt, dc = time.perf_counter() - t, time.process_time() - c
    return dt, dc, (mem.delta if use_rss else 0), out


def matmul_peak(dtype: torch.dtype, device: torch.device, quick: bool) -> float:
    """Best observed GFLOP/s of a large square ``torch.matmul`` in ``dtype``."""
    if device.type == "cuda":
        n, reps = 8192, 10
    else:
        n, reps = 2048, (2 if quick else 4)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    with torch.inference_mode():
        a @ b
        for _ in range(reps):
            sync(device)
            t = time.perf_counter()
            a @ b
            sync(device)
            best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


# ---------------------------------------------------------------------------------------- models
def build_ours(
    arch: str, device: torch.device, seed: int, gamma: float | None
) -> sapiens2.models.Sapiens2:
    """Built on ``meta``, materialised and initialised directly on ``device`` (fast on a GPU).

    ``gamma`` overrides the LayerScale weights: at their 1e-4 init the attention branch hardly
    reaches the output, so the error columns would not see attention or RoPE differences.
    """
    model = sapiens2.create_model(arch, device="meta")
    model.to_empty(device=device)
    torch.manual_seed(seed)
    model.init_weights()
    if gamma is not None:
        with torch.no_grad():
            for blk in model.blocks:
                if blk.attn.gamma is not None:
                    blk.attn.gamma.weight.fill_(gamma)
    return model.eval()


def build_official(model: sapiens2.models.Sapiens2) -> OfficialStyleSapiens2:
    cfg = model.cfg
    if cfg.use_tokenizer or not cfg.qk_norm or cfg.num_storage_tokens != 8:
        raise ValueError(f"the official-style baseline covers the plain archs, not {cfg.name}")
    with torch.device("meta"):
        ref = OfficialStyleSapiens2(
            cfg.embed_dim,
            cfg.depth,
            cfg.num_heads,
            cfg.ffn_dim,
            [cfg.kv_heads(i) for i in range(cfg.depth)],
            patch=cfg.patch_size,
            rope_base=cfg.rope_base,
        )
    ref.load_state_dict(model.state_dict(), strict=True, assign=True)  # shares the tensors
    return ref.eval()


def build_transformers(model: sapiens2.models.Sapiens2, device: torch.device):
    from transformers import Sapiens2Config, Sapiens2Model

    cfg = model.cfg
    if cfg.use_tokenizer:
        raise ValueError("transformers.Sapiens2Model has no 4K tokenizer")
    hf_cfg = Sapiens2Config(
        hidden_size=cfg.embed_dim,
        num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.ffn_dim,
        num_key_value_attention_heads=cfg.num_kv_heads or cfg.num_heads,
        num_first_full_attention_layers=cfg.full_attn_early,
        num_last_full_attention_layers=cfg.full_attn_late,
        num_register_tokens=cfg.num_storage_tokens,
        patch_size=cfg.patch_size,
        image_size=list(cfg.img_size),
        rope_theta=cfg.rope_base,
        rms_norm_eps=cfg.norm_eps,
        pos_embed_rescale=None,
        attn_implementation="sdpa",
    )
    with torch.device("meta"):
        hf = Sapiens2Model(hf_cfg)
    sd = official_to_transformers(model.state_dict(), None)  # the package's key map
    hf.load_state_dict(sd, strict=True, assign=True)
    # The one non-persistent buffer (meta after construction), float32 as from_pretrained makes
    # it whatever the weight dtype: 1 / theta ** arange(0, 1, 4/hd).
    hf.rope_embeddings.inv_freq = 1 / cfg.rope_base ** torch.arange(
        0, 1, 4 / cfg.head_dim, dtype=torch.float32, device=device
    )
    return hf.eval()


# ---------------------------------------------------------------------------------------- runs
@dataclass
class Row:
    arch: str
    resolution: str
    dtype: str
    batch: int
    impl: str
    device: str
    median_s: float
    times_s: list[float]
    images_per_s: float
    gflop: float
    gflop_per_s: float
    pct_of_peak: float
    peak_mem_mib: float
    speedup_of_ours: float | None = None  # median over rounds of t(this) / t(ours)
    speedup_ratio_of_medians: float | None = None
    cpu_median_s: float | None = None  # process CPU time (all threads) per forward
    cpu_times_s: list[float] = field(default_factory=list)
    speedup_cpu_of_ours: float | None = None  # median over rounds of cpu(this) / cpu(ours)
    rel_err_vs_ours: float | None = None  # max|diff| / max|ours| on the output tokens
    rel_err_vs_fp32: float | None = None  # same, against ours in fp32 (low-precision rows)
    compile_s: float | None = None
    notes: list[str] = field(default_factory=list)


def peak_for(dtype_name: str, device: torch.device, peaks: dict[str, float]) -> float:
    """The matmul peak a row is measured against: its dtype's, or on CPU the larger of that and
    fp32's (bf16 weights compute in fp32 on CPUs without bf16 units)."""
    if device.type == "cpu":
        return max(peaks[dtype_name], peaks["fp32"])
    return peaks[dtype_name]


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return ((a - b).abs().max() / b.abs().max()).item()


def run_case(
    arch, res, dtype_name, batch, impls, device, args, peaks, fp32_ref
) -> tuple[list[Row], torch.Tensor | None]:
    dtype = DTYPES[dtype_name]
    h, w = res
    cfg = get_arch(arch)
    base = build_ours(arch, device, args.seed, args.gamma)
    ours = base.to(dtype)
    torch.manual_seed(args.seed + 1)
    x = torch.randn(batch, 3, h, w, device=device).to(dtype)
    fns, notes = {}, {}
    compile_s = None
    for impl in impls:
        try:
            if impl == "ours":
                fns[impl] = ours.forward_features
            elif impl == "official":
                fns[impl] = build_official(ours)
            elif impl == "transformers":
                hf = build_transformers(ours, device)
                fns[impl] = lambda t, hf=hf: hf(pixel_values=t).last_hidden_state
        except (ImportError, ValueError) as e:
            log.warning("skipping %s: %s", impl, e)
    if args.compile and "ours" in fns:
        fns["ours"] = torch.compile(ours.forward_features, mode=args.compile_mode)
    times = {k: [] for k in fns}
    cpu_times = {k: [] for k in fns}
    mems = {k: 0 for k in fns}
    outs = {}
    with torch.inference_mode():
        for impl, fn in fns.items():  # warm-up (and compilation) per implementation
            for i in range(args.warmup):
                t, _, _, out = timed_forward(fn, x, device)
                if impl == "ours" and args.compile and i == 0:
                    compile_s = t
                log.info("%s %s %s b%d %s warm-up %.3fs", arch, res, dtype_name, batch, impl, t)
        for r in range(args.repeats):
            for impl, fn in fns.items():  # interleaved: A B C A B C ...
                t, c, mem, out = timed_forward(fn, x, device)
                times[impl].append(t)
                cpu_times[impl].append(c)
                mems[impl] = max(mems[impl], mem)
                if r == 0:
                    outs[impl] = out.float().cpu()
                log.info(
                    "%s %s %s b%d %s run %d %.3fs (cpu %.3fs)",
                    *(arch, res, dtype_name, batch, impl, r, t, c),
                )
    gflop = forward_flops(cfg, h, w, batch) / 1e9
    rows = []
    t_ours = statistics.median(times["ours"]) if "ours" in times else None
    for impl in fns:
        med = statistics.median(times[impl])
        row = Row(
            arch=arch,
            resolution=f"{h}x{w}",
            dtype=dtype_name,
            batch=batch,
            impl=impl + (" (compiled)" if impl == "ours" and args.compile else ""),
            device=str(device),
            median_s=med,
            times_s=times[impl],
            images_per_s=batch / med,
            gflop=gflop,
            gflop_per_s=gflop / med,
            pct_of_peak=100 * gflop / med / peak_for(dtype_name, device, peaks),
            peak_mem_mib=mems[impl] / 2**20,
            compile_s=compile_s if impl == "ours" else None,
            cpu_median_s=statistics.median(cpu_times[impl]),
            cpu_times_s=cpu_times[impl],
            notes=notes.get(impl, []),
        )
        if t_ours is not None:
            # Paired: the median over rounds of this round's time / ours' time in the same round
            # (robust to load that drifts between rounds); the ratio of medians is kept too.
            ratios = [t / o for t, o in zip(times[impl], times["ours"], strict=True)]
            row.speedup_of_ours = statistics.median(ratios)
            row.speedup_ratio_of_medians = med / t_ours
            cpu_ratios = [t / o for t, o in zip(cpu_times[impl], cpu_times["ours"], strict=True)]
            row.speedup_cpu_of_ours = statistics.median(cpu_ratios)
            if impl != "ours":
                row.rel_err_vs_ours = max_rel(outs[impl], outs["ours"])
        if fp32_ref is not None and dtype_name != "fp32":
            row.rel_err_vs_fp32 = max_rel(outs[impl], fp32_ref)
        rows.append(row)
    ref = outs.get("ours") if dtype_name == "fp32" else None
    del fns, ours, base, outs
    return rows, ref


def parse_res(s: str) -> tuple[int, int]:
    h, _, w = s.lower().partition("x")
    if not (h.isdigit() and w.isdigit()):
        raise argparse.ArgumentTypeError(f"resolution must look like 1024x768, got {s!r}")
    return int(h), int(w)


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows: list[Row], header: dict) -> None:
    print(f"# {header['device_name']}; torch {header['torch']}; threads {header['threads']}")
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in header["matmul_peak_gflops"].items())
    print(f"# matmul peak GFLOP/s: {peaks}; {header['date']}")
    cols = (
        "arch",
        "res",
        "dtype",
        "B",
        "impl",
        "median s",
        "img/s",
        "ours x",
        "CPU s",
        "ours x (CPU)",
        "GFLOP/s",
        "%peak",
        "mem MiB",
        "err vs ours",
        "err vs fp32",
    )
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        cells = (
            r.arch,
            r.resolution,
            r.dtype,
            str(r.batch),
            r.impl,
            f"{r.median_s:.3f}",
            f"{r.images_per_s:.2f}",
            fmt(r.speedup_of_ours, ".2f"),
            fmt(r.cpu_median_s, ".1f"),
            fmt(r.speedup_cpu_of_ours, ".2f"),
            f"{r.gflop_per_s:.0f}",
            f"{r.pct_of_peak:.0f}",
            f"{r.peak_mem_mib:.0f}",
            fmt(r.rel_err_vs_ours, ".1e"),
            fmt(r.rel_err_vs_fp32, ".1e"),
        )
        print("| " + " | ".join(cells) + " |")


def write_json(path: Path, header: dict, rows: list[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"header": header, "rows": [asdict(r) for r in rows]}, indent=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--archs", nargs="+", default=["sapiens2_0.4b"])
    p.add_argument("--res", nargs="+", type=parse_res, default=[(1024, 768)], metavar="HxW")
    p.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32", "bf16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", nargs="+", type=int, default=[1])
    p.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    p.add_argument("--repeats", type=int, default=None, help="timed runs per impl (median)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--compile", action="store_true", help="torch.compile ours (compile time kept)")
    p.add_argument("--compile-mode", default=None)
    p.add_argument(
        "--sdpa",
        choices=["auto", "flash", "efficient", "math", "cudnn"],
        default="auto",
        help="restrict scaled_dot_product_attention to one backend (all implementations)",
    )
    p.add_argument("--quick", action="store_true", help="GPU: 0.4B+1B, bf16, batch 1 and 8")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--gamma",
        type=float,
        default=1.0,
        help="LayerScale value of the random model (default 1: attention reaches the output "
        "error figures; the init value 1e-4 hides it); timings do not depend on it",
    )
    p.add_argument("--json", type=Path, default=None, help="write all rows and the header here")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)

    device = torch.device(args.device)
    if args.quick:
        if device.type == "cuda":
            args.archs, args.dtypes, args.batch = ["sapiens2_0.4b", "sapiens2_1b"], ["bf16"], [1, 8]
            args.repeats = args.repeats or 10
        else:
            args.res, args.dtypes = [(512, 384)], ["fp32", "bf16"]
            args.repeats = args.repeats or 2
    if args.compile:
        args.warmup = max(args.warmup, 1)  # the first call compiles
    if args.repeats is None:
        args.repeats = 20 if device.type == "cuda" else 3
    if args.threads:
        torch.set_num_threads(args.threads)
    for a in args.archs:
        get_arch(a)  # a clear error for an unknown name before anything runs

    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = platform.processor() or platform.machine()
        with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    device_name = line.split(":", 1)[1].strip()
                    break
    peaks = {d: matmul_peak(DTYPES[d], device, args.quick) for d in sorted({"fp32", *args.dtypes})}
    header = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": str(device),
        "device_name": device_name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "matmul_peak_gflops": peaks,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "sdpa": args.sdpa,
        "interleaved": True,
    }
    sdpa_ctx = contextlib.nullcontext()
    if args.sdpa != "auto":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = {
            "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "math": SDPBackend.MATH,
            "cudnn": SDPBackend.CUDNN_ATTENTION,
        }[args.sdpa]
        sdpa_ctx = sdpa_kernel(backend)

    rows: list[Row] = []
    with sdpa_ctx:
        for arch in args.archs:
            for res in args.res:
                for batch in args.batch:
                    fp32_ref = None
                    for dt in sorted(args.dtypes, key=lambda d: d != "fp32"):  # fp32 first
                        case, ref = run_case(
                            arch, res, dt, batch, args.impls, device, args, peaks, fp32_ref
                        )
                        fp32_ref = ref if ref is not None else fp32_ref
                        rows.extend(case)
                        if args.json:  # after every case, so a cut-short run keeps its rows
                            write_json(args.json, header, rows)
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
    # The peak once more after the runs; the best of both stands for the machine (load drifts).
    for d, v in list(peaks.items()):
        peaks[d] = max(v, matmul_peak(DTYPES[d], device, args.quick))
    for r in rows:
        r.pct_of_peak = 100 * r.gflop_per_s / peak_for(r.dtype, device, peaks)
    if sys.platform.startswith("linux"):
        import resource

        # the whole process (weights, activations, every implementation run): what a machine needs
        header["process_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        write_json(args.json, header, rows)
    print_table(rows, header)
    if "process_peak_rss_mib" in header:
        print(f"# process peak resident memory: {header['process_peak_rss_mib']:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
