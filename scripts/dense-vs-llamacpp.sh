#!/usr/bin/env bash
# Dense decode with the whole model in DRAM, FlashLm against llama.cpp (LLamaSharp) on the same GGUF files,
# alternating the two workers file by file and repetition by repetition; prints each run and the medians.
# usage: scripts/dense-vs-llamacpp.sh LAYOUT REPS DECODE FILE.gguf [FILE.gguf ...]
#   LAYOUT: any flash layout with the files' tokenizer (only its tokenizer is used: it makes the token sequence)
set -euo pipefail
layout=$1; reps=$2; n=$3; shift 3
bench="$(dirname "$0")/../src/FlashLm.Bench/bin/Release/net10.0/flashlm-bench"
[ -x "$bench" ] || { echo "build first: dotnet build src/FlashLm.Bench -c Release" >&2; exit 2; }
out=$(mktemp)
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); flags: $(grep -o -w -E 'avx512bw|avx2|avx_vnni' /proc/cpuinfo | sort -u | tr '\n' ' ')"
for r in $(seq 1 "$reps"); do
  for f in "$@"; do
    for w in dense llamacpp; do
      ms=$("$bench" --worker $w --gguf "$f" --model "$layout" -n "$n" 2>/dev/null | grep -o '"ms_per_token":[0-9.]*' | cut -d: -f2)
      echo "rep $r $(basename "$f") $w ${ms:-failed}" | tee -a "$out"
    done
  done
done
python3 - "$out" <<'PY'
import sys, statistics as st, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    _, _, f, w, ms = line.split()
    if ms != "failed": runs[(f, w)].append(float(ms))
print(f"{'file':32} {'FlashLm ms':>10} {'llama.cpp ms':>12} {'speed ratio':>11}  (medians)")
for f in dict.fromkeys(k[0] for k in runs):
    d, l = runs.get((f, "dense")), runs.get((f, "llamacpp"))
    if d and l: print(f"{f:32} {st.median(d):10.1f} {st.median(l):12.1f} {st.median(l)/st.median(d):10.2f}x")
PY
rm -f "$out"
