"""Per-NFE forward time and peak memory of ADM networks: ud2m (C++) vs PyTorch
eager on the same weights, same input, same threads, in one run.

    python bench/adm_forward.py --build build [--config adm-ffhq-256] [--size 256]
    python bench/adm_forward.py --build build --device cuda --iters 50 --compile reduce-overhead

Python peers: plain fp32 eager, and the tuned bf16 recipe (bf16 weights +
autocast, channels-last; GroupNorm runs in fp32 inside the model); on a GPU
optionally that recipe under torch.compile (--compile MODE; reduce-overhead
adds CUDA graphs), whose compile time is printed apart. The C++ rows on a
GPU add bf16 replayed from a CUDA graph. --trace T.json profiles one more pass
of the C++ bf16 row and prints its time by operator (and, on a GPU, by kernel
and kernel family), then the same for PyTorch's bf16 recipe (T_pytorch.json).

It also checks the outputs: the C++ fp32 network must give PyTorch's ε on the
same input (max relative error printed; `--config adm-256-uncond` is the
full-size conformance check of the 552,814,086-parameter network).
"""
import argparse
import copy
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "python"))
from gen_adm import build  # noqa: E402  (deepinv's DiffUNet blocks)

PRESETS = {
    "adm-ffhq-256": dict(image_size=256, in_channels=3, model_channels=128, out_channels=6, num_res_blocks=1,
                         attention_resolutions=[16], dropout=0.0, channel_mult=[1, 1, 2, 2, 4, 4],
                         conv_resample=True, num_classes=0, num_heads=4, num_head_channels=64,
                         num_heads_upsample=-1, use_scale_shift_norm=True, resblock_updown=True,
                         use_new_attention_order=False),
}
PRESETS["adm-256-uncond"] = dict(PRESETS["adm-ffhq-256"], model_channels=256, num_res_blocks=2,
                                 attention_resolutions=[32, 16, 8])
PRESETS["ud2m-small-64"] = dict(PRESETS["adm-ffhq-256"], image_size=64, model_channels=32, out_channels=3,
                                num_res_blocks=2, attention_resolutions=[16, 8], channel_mult=[1, 2, 4, 4],
                                num_head_channels=32)


def peak_rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mib(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mib()


def time_python(model, x, t, iters, bf16, channels_last, compile_mode=None, trace=None):
    """Seconds per pass (and, compiled, the seconds the first calls took); with
    `trace`, one more pass is profiled into that Chrome trace."""
    device = x.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if bf16:
        model = model.to(torch.bfloat16)
        for m in model.modules():  # GroupNorm32 normalises in fp32: keep its affine fp32
            if isinstance(m, torch.nn.GroupNorm):
                m.float()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    forward = model.forward_diffusion
    if compile_mode:
        forward = torch.compile(forward, mode=compile_mode)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        start = time.perf_counter()
        for _ in range(3 if compile_mode else 1):  # compile, record the graphs, warm up
            forward(x, t)
        synchronize(device)
        warmup = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(iters):
            forward(x, t)
        synchronize(device)
        seconds = (time.perf_counter() - start) / iters
        if trace:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            with torch.profiler.profile(activities=activities) as profiler:
                forward(x, t)
                synchronize(device)
            profiler.export_chrome_trace(trace)
    return seconds, warmup


def print_table(rows, py_fp32, py_bf16, errors, memory="peak RSS MiB"):
    """Rows (label, seconds, MiB) as ms per pass and ratios to the two PyTorch peers."""
    print(f"{'':52s} {'ms/pass':>9s} {'vs eager fp32':>14s} {'vs PyTorch bf16':>16s} {memory:>13s}")
    for label, sec, mib in rows:
        print(f"{label:52s} {sec * 1e3:9.2f} {py_fp32 / sec:13.2f}x {py_bf16 / sec:15.2f}x {mib or float('nan'):13.0f}")
    print("output vs PyTorch fp32 (max relative error): " +
          ", ".join(f"{label} {err:.1e}" for label, err in errors.items()))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--build", default="build")
    p.add_argument("--config", default="adm-ffhq-256", choices=sorted(PRESETS))
    p.add_argument("--model", help="a ud2m prior file to time instead of random weights")
    p.add_argument("--size", type=int, default=0)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--rounds", type=int, default=1, help="repeat, alternating which side goes first; keep the best")
    p.add_argument("--compile", metavar="MODE", help="also time the bf16 recipe under torch.compile(mode=MODE)")
    p.add_argument("--trace", metavar="JSON", help="profile one more pass of the C++ channels-last row of "
                   "--trace-precision and print where its time goes (bench/op_times.py)")
    p.add_argument("--trace-precision", choices=["fp32", "bf16"], default="bf16")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.set_num_threads(args.threads)
    cfg = PRESETS[args.config]
    size = args.size or cfg["image_size"]
    torch.manual_seed(0)
    model = build(cfg).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "prior.safetensors"
        if args.model:
            path = pathlib.Path(args.model)
            model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
        else:
            meta = {"format": "ud2m-prior", "version": 1, "arch": "adm", "config": cfg,
                    "schedule": {"type": "linear", "steps": 1000, "beta_start": 1e-4, "beta_end": 0.02},
                    "prediction": "epsilon"}
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
                      metadata={"ud2m": json.dumps(meta)})
        x = torch.randn(args.batch, 3, size, size)
        t = torch.full((args.batch,), 500.0)
        io = pathlib.Path(tmp) / "io.safetensors"
        save_file({"x": x, "t": t}, str(io))
        with torch.no_grad():
            reference = model.forward_diffusion(x, t)
        model, xd, td = model.to(device), x.to(device), t.to(device)
        binary = pathlib.Path(args.build) / "bench" / "adm_forward"
        errors = {}
        python_trace = args.trace and str(pathlib.Path(args.trace).with_suffix("")) + "_pytorch.json"

        def python_rows():
            rows = []
            sec, _ = time_python(model, xd, td, args.iters, False, False)
            rows.append(("PyTorch eager fp32", sec, peak_mib(device)))
            sec, _ = time_python(copy.deepcopy(model), xd, td, args.iters, True, True, trace=python_trace)
            # on the CPU the peak RSS is the process's, already counted in the first row
            rows.append(("PyTorch bf16 weights+autocast, channels-last", sec,
                         peak_mib(device) if device.type == "cuda" else None))
            if args.compile:
                sec, warmup = time_python(copy.deepcopy(model), xd, td, args.iters, True, True, args.compile)
                rows.append((f"PyTorch bf16 recipe, torch.compile {args.compile}", sec, peak_mib(device)))
                print(f"torch.compile({args.compile}): first 3 calls took {warmup:.1f} s")
            return rows

        def cpp_rows():
            rows = []
            runs = [("ud2m C++ fp32", "fp32", 0, []), ("ud2m C++ fp32 channels-last", "fp32", 1, []),
                    ("ud2m C++ bf16 channels-last", "bf16", 1, [])]
            if device.type == "cuda":
                runs.append(("ud2m C++ bf16 channels-last, CUDA graph", "bf16", 1, ["--cuda-graph"]))
            if args.trace:
                traced = 1 if args.trace_precision == "fp32" else 2
                runs[traced] = (*runs[traced][:3], ["--trace", args.trace])
            for label, dtype, cl, extra in runs:
                out = subprocess.run([str(binary), str(path), str(size), str(args.batch), dtype, str(cl),
                                      str(args.iters), str(args.threads), str(io), "--device", args.device,
                                      *extra], capture_output=True, text=True)
                if out.returncode != 0:
                    print(f"{label}: failed\n{out.stderr[-2000:]}")
                    continue
                r = json.loads(out.stdout)
                rows.append((label, r["seconds_per_pass"],
                             r["peak_device_mib"] if device.type == "cuda" else r["peak_rss_mib"]))
                eps = load_file(str(io) + ".out.safetensors")["eps"]
                ref = reference[:, :eps.shape[1]]  # learn_sigma: ud2m's ε is the first 3 of 6 channels
                errors[label] = ((eps - ref).abs().max() / ref.abs().max()).item()
            return rows

        # Rounds alternate which side runs first (a process started right after
        # the other's passes can find the caches and clocks in another state);
        # each row keeps its fastest round and the first round's memory (the
        # first round runs PyTorch first, which fixes the table's order).
        best = {}
        for r in range(args.rounds):
            for rows in ([python_rows, cpp_rows] if r % 2 == 0 else [cpp_rows, python_rows]):
                for label, sec, mem in rows():
                    print(f"round {r + 1}: {label}: {sec * 1e3:.2f} ms/pass", flush=True)  # kept if cut short
                    sec0, mem0 = best.get(label, (sec, mem))
                    best[label] = (min(sec, sec0), mem0)
        rows = [(label, sec, mem) for label, (sec, mem) in best.items()]
        py_fp32 = best["PyTorch eager fp32"][0]
        py_bf16 = best["PyTorch bf16 weights+autocast, channels-last"][0]
    params = sum(p.numel() for p in model.parameters())
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{args.threads} threads"
    print(f"{args.config} ({params / 1e6:.1f} M params), {size}x{size}, batch {args.batch}, {where}, "
          f"best of {args.rounds} round(s)")
    print_table(rows, py_fp32, py_bf16, errors, "peak GPU MiB" if device.type == "cuda" else "peak RSS MiB")
    if args.trace:
        for label, precision, trace in (("ud2m C++", args.trace_precision, args.trace),
                                        ("PyTorch bf16 recipe", "bf16", python_trace)):
            print(f"\n== where one {precision} pass of {label} spends its time ({trace})")
            subprocess.run([sys.executable, str(pathlib.Path(__file__).with_name("op_times.py")), trace, "--top", "25"])


if __name__ == "__main__":
    main()
