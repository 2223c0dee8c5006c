"""Sums a Chrome trace (from `adm_forward ... --trace T.json` or torch.profiler's
export_chrome_trace) by operator: self time per aten op, largest first.

    python bench/op_times.py T.json [--top 15]
"""
import argparse
import collections
import json


def self_times(events):
    """Self time of each complete ("X") CPU op event: its duration minus its children's, per thread."""
    by_thread = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in ("cpu_op", "Operator", "cuda_runtime", "kernel"):
            by_thread[(e.get("pid"), e.get("tid"))].append(e)
    totals = collections.Counter()
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # open events: [end, name, child time]
        for e in evs:
            while stack and stack[-1][0] <= e["ts"]:
                end, name, child, dur = stack.pop()
                totals[name] += dur - child
            if stack:
                stack[-1][2] += e["dur"]
            stack.append([e["ts"] + e["dur"], e["name"], 0.0, e["dur"]])
        while stack:
            end, name, child, dur = stack.pop()
            totals[name] += dur - child
    return totals


def main():
    p = argparse.ArgumentParser()
    p.add_argument("trace")
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args()
    trace = json.load(open(args.trace))
    totals = self_times(trace["traceEvents"] if isinstance(trace, dict) else trace)
    whole = sum(totals.values())
    print(f"{'operator':40s} {'self ms':>9s} {'share':>7s}")
    for name, us in totals.most_common(args.top):
        print(f"{name:40s} {us / 1e3:9.1f} {100 * us / whole:6.1f}%")
    print(f"{'total':40s} {whole / 1e3:9.1f}")


if __name__ == "__main__":
    main()
