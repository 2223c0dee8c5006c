#!/bin/sh
# Physics operators, C++ (ud2m) vs deepinv, same machine, same run.
# Usage: bench/physics.sh [BUILD_BENCH_DIR] [PYTHON] [ROUNDS] [THREADS]
# The two programs alternate for ROUNDS rounds and each time is the fastest seen,
# so a burst of load from other processes does not decide the ratio.
set -e
bench=${1:-build/bench}
python=${2:-$HOME/.cache/ud2m/venv/bin/python}
rounds=${3:-3}
# Both sides get the same intra-op thread count (default 1: on a busy 2-core
# machine a descheduled worker thread costs a whole time slice per op).
export OMP_NUM_THREADS=${4:-1}
here=$(dirname "$0")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
i=0
while [ $i -lt "$rounds" ]; do
  "$bench/bench_physics" | sed 's/^/cpp /' >> "$tmp/all"
  "$python" "$here/bench_physics.py" | sed 's/^/py /' >> "$tmp/all"
  i=$((i + 1))
done
printf "%-24s %10s %10s %8s %10s %10s %8s\n" operator "A ud2m" "A deepinv" speedup "prox ud2m" "prox dinv" speedup
awk '
  { key = $1 " " $2; if (!(key in a) || $3 < a[key]) a[key] = $3; if (!(key in p) || $4 < p[key]) p[key] = $4;
    if ($1 == "cpp" && !($2 in seen)) { seen[$2] = 1; order[n++] = $2 } }
  END { for (i = 0; i < n; i++) { o = order[i]; c = "cpp " o; d = "py " o;
          printf "%-24s %8.2fms %8.2fms %7.2fx %8.2fms %8.2fms %7.2fx\n", o, a[c], a[d], a[d] / a[c], p[c], p[d], p[d] / p[c] } }
' "$tmp/all"
