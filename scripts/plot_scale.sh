#!/usr/bin/env bash
# Draws the scaling plots of BENCHMARKS.md and docs/scaling.md from the numbers that
# `scripts/bench.sh scale` wrote to target/bench_scale/ (one file per run: scale-pg15.tsv,
# scale-pg18.tsv, scale-pg18-origin-any.tsv, join-*.tsv). Needs gnuplot (Debian: gnuplot-nox;
# installed here if missing).
#   scripts/plot_scale.sh [data_dir] [out_dir]     defaults: target/bench_scale docs/img
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-target/bench_scale}
out=${2:-docs/img}
command -v gnuplot >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q gnuplot-nox >/dev/null
mkdir -p "$out"
shopt -s nullglob
scale=("$data"/scale-*.tsv)
joins=("$data"/join-*.tsv)
[ ${#scale[@]} -gt 0 ] || { echo "no $data/scale-*.tsv: run scripts/bench.sh scale first" >&2; exit 1; }

# One gnuplot "plot" clause per file and column: title from the file name.
clauses() { # column title-suffix point-type files...
    local col=$1 what=$2 pt=$3; shift 3
    local sep=""
    for f in "$@"; do
        local t; t=$(basename "$f" .tsv); t=${t#scale-}; t=${t#join-}
        # From 16 the default is origin = none; a run with BENCH_ORIGIN=any says so in its name.
        case $t in pg1[6-9]|pg[2-9]?) t="$t origin=none" ;; esac
        printf '%s"%s" using 1:%s with linespoints pt %s lw 2 title "%s %s"' "$sep" "$f" "$col" "$pt" "$t" "$what"
        sep=", "
    done
}

gnuplot <<EOF
set terminal pngcairo size 900,560 font ",11"
set key top left
set grid
set xlabel "nodes in the federation (N)"

set output "$out/scale_cpu.png"
set title "CPU per node per 10,000 rows written (walsenders: logical decoding; apply workers)"
set ylabel "CPU seconds"
plot $(clauses 6 decoding 7 "${scale[@]}"), $(clauses 7 apply 5 "${scale[@]}")

set output "$out/scale_lag.png"
set title "Replication lag at a fixed total write rate, all nodes writing"
set ylabel "lag, ms"
plot $(clauses 8 p50 7 "${scale[@]}"), $(clauses 9 p99 5 "${scale[@]}")
EOF

if [ ${#joins[@]} -gt 0 ]; then
gnuplot <<EOF
set terminal pngcairo size 900,560 font ",11"
set key top left
set grid
set output "$out/join_size.png"
set title "A third node joins a two-node federation: seconds against rows held"
set xlabel "rows in the federation"
set ylabel "seconds to ready"
set format x "%.0s%c"
plot $(clauses 2 join 7 "${joins[@]}")
EOF
fi
ls -l "$out"/scale_cpu.png "$out"/scale_lag.png ${joins:+"$out"/join_size.png}
