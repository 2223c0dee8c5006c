"""Sums a Chrome trace (from `adm_forward ... --trace T.json` or torch.profiler's
export_chrome_trace) by operator: self time and number of calls per aten op,
largest first; on a GPU trace, the same for the kernels the GPU ran.

    python bench/op_times.py T.json [--top 15]
"""
import argparse
import collections
import json

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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("trace")
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args()
    trace = json.load(open(args.trace))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    print_table("operator (CPU)", *self_times(events, CPU_CATEGORIES), args.top)
    print_table("GPU kernel", *self_times(events, GPU_CATEGORIES), args.top)


if __name__ == "__main__":
    main()
