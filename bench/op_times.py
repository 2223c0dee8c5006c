"""Sums a Chrome trace (from `adm_forward ... --trace T.json` or torch.profiler's
export_chrome_trace) by operator: self time and number of calls per aten op,
largest first; on a GPU trace, the same for the kernels the GPU ran, those
kernels by family (convolution, attention, normalisation...), and how much of
the span from the first kernel's start to the last one's end the GPU was busy
(idle time there is launch overhead a CUDA graph would remove).

    python bench/op_times.py T.json [--top 15]
"""
import argparse
import collections
import json
import re

CPU_CATEGORIES = ("cpu_op", "Operator", "cuda_runtime")
GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")


def self_times(events, categories):
    """Self time and call count of each complete ("X") event of these categories:
    its duration minus its children's, per thread (a GPU stream counts as one)."""
    by_thread = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in categories:
            by_thread[(e.get("pid"), e.get("tid"))].append(e)
    totals, calls = collections.Counter(), collections.Counter()
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # open events: [end, name, child time, duration]
        for e in evs:
            while stack and stack[-1][0] <= e["ts"]:
                end, name, child, dur = stack.pop()
                totals[name] += dur - child
            if stack:
                stack[-1][2] += e["dur"]
            stack.append([e["ts"] + e["dur"], e["name"], 0.0, e["dur"]])
            calls[e["name"]] += 1
        while stack:
            end, name, child, dur = stack.pop()
            totals[name] += dur - child
    return totals, calls


def print_table(title, totals, calls, top):
    if not totals:
        return
    whole = sum(totals.values())
    print(f"{title[:60]:60s} {'calls':>6s} {'self ms':>9s} {'share':>7s}")
    for name, us in totals.most_common(top):
        print(f"{name[:60]:60s} {calls[name]:6d} {us / 1e3:9.2f} {100 * us / whole:6.1f}%")
    print(f"{'total':60s} {sum(calls.values()):6d} {whole / 1e3:9.2f}")


# Kernel families by name, first match wins (cuDNN and cuBLAS name their GEMM
# kernels after the hardware: xmma, sm90_*, cutlass).
FAMILIES = (
    ("attention", r"flash|fmha|attention|softmax"),
    ("convolution / GEMM", r"conv|xmma|gemm|cutlass|sm\d+_|wgrad|dgrad|fprop|implicit"),
    ("normalisation (GroupNorm, fused GN+SiLU)", r"norm|moments|welford|coefficients"),
    ("copies, layout, cat", r"copy|cat|transpose|memcpy|memset|nchw|nhwc|permute"),
    ("elementwise, activation", r"elementwise|vectorized|silu|add|mul|unrolled"),
)


def family(kernel):
    for name, pattern in FAMILIES:
        if re.search(pattern, kernel, re.IGNORECASE):
            return name
    return "other"


def print_gpu_summary(events, totals, calls):
    kernels = [e for e in events if e.get("ph") == "X" and e.get("cat") in GPU_CATEGORIES]
    if not kernels:
        return
    busy = sum(totals.values())
    span = max(e["ts"] + e["dur"] for e in kernels) - min(e["ts"] for e in kernels)
    print(f"GPU busy {busy / 1e3:.2f} ms of a {span / 1e3:.2f} ms span ({100 * busy / span:.0f}%), "
          f"{sum(calls.values())} kernels")
    by_family, family_calls = collections.Counter(), collections.Counter()
    for name, us in totals.items():
        by_family[family(name)] += us
        family_calls[family(name)] += calls[name]
    print_table("kernel family", by_family, family_calls, len(FAMILIES) + 1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("trace")
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args()
    trace = json.load(open(args.trace))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    print_table("operator (CPU)", *self_times(events, CPU_CATEGORIES), args.top)
    gpu_totals, gpu_calls = self_times(events, GPU_CATEGORIES)
    print_table("GPU kernel", gpu_totals, gpu_calls, args.top)
    print_gpu_summary(events, gpu_totals, gpu_calls)


if __name__ == "__main__":
    main()
