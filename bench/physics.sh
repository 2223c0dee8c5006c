#!/bin/sh
# Physics operators, C++ (ud2m) vs deepinv, same machine, same run.
# Usage: bench/physics.sh BUILD_DIR PYTHON
set -e
build=${1:-build}
python=${2:-$HOME/.cache/ud2m/venv/bin/python}
here=$(dirname "$0")
cpp=$("$build/bench_physics")
py=$("$python" "$here/bench_physics.py")
echo "$cpp" > /tmp/ud2m_bench_cpp.$$
echo "$py" > /tmp/ud2m_bench_py.$$
printf "%-24s %10s %10s %8s %10s %10s %8s\n" operator "A ud2m" "A deepinv" speedup "prox ud2m" "prox dinv" speedup
# Both print the operators in the same order: pair the lines.
paste -d' ' /tmp/ud2m_bench_cpp.$$ /tmp/ud2m_bench_py.$$ |
  awk '{printf "%-24s %8.2fms %8.2fms %7.2fx %8.2fms %8.2fms %7.2fx\n", $1, $2, $5, $5/$2, $3, $6, $6/$3}'
rm -f /tmp/ud2m_bench_cpp.$$ /tmp/ud2m_bench_py.$$
