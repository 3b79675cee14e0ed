#!/usr/bin/env bash
# Runs the README's flash example (stories260K, 3 MiB budget, window 5, lookahead predictor) N times (default 200) and
# prints how many runs failed and whether every run printed the same text. Needs ../shared/models/stories260K.
# Usage: scripts/readme-flash-200.sh [runs] [layout-dir]
set -u
cd "$(dirname "$0")/.."
RUNS=${1:-200}
LAYOUT=${2:-/tmp/readme-flash-200.flash}
M=${FLASHLM_MODELS:-../shared/models}/stories260K
[ -d "$M" ] || M=/work/shared/models/stories260K
# FLASHLM_BIN: a folder holding a built flashlm.dll (default: build the CLI here).
if [ -n "${FLASHLM_BIN:-}" ]; then D=$FLASHLM_BIN; else
  D=src/FlashLm.Cli/bin/Release/net10.0
  dotnet build src/FlashLm.Cli -c Release -v q -nologo >/dev/null || { echo "build failed"; exit 2; }
fi
if [ ! -f "$LAYOUT/manifest.json" ]; then
  dotnet $D/flashlm.dll convert "$M/stories260K.bin" --tokenizer "$M/tok512.bin" --out "$LAYOUT" >/dev/null || exit 2
  dotnet $D/flashlm.dll calibrate "$LAYOUT" --sparsity 0.5 --tokens 2048 --rank 64 --lookahead >/dev/null || exit 2
fi
OUT=$(mktemp -d)
fails=0
for i in $(seq 1 "$RUNS"); do
  if ! dotnet $D/flashlm.dll generate --model "$LAYOUT" --mode flash --prompt "Once upon a time" -n 64 --temperature 0 \
       --dram-budget 3MiB --set process-reserve=0 --window 5 --predictor lookahead --measure-predictor >"$OUT/$i.out" 2>"$OUT/$i.err"; then
    fails=$((fails + 1))
    echo "run $i failed: $(tail -c 300 "$OUT/$i.err")"
  fi
done
# stdout holds the generated text only (the plan and the statistics table, which has timings, go to stderr).
distinct=$(for i in $(seq 1 "$RUNS"); do md5sum < "$OUT/$i.out"; done | sort -u | wc -l)
echo "failures: $fails/$RUNS"
if [ "$distinct" -eq 1 ]; then echo "outputs: all $RUNS identical"; else echo "outputs: $distinct different texts"; fi
rm -rf "$OUT"
[ "$fails" -eq 0 ] && [ "$distinct" -eq 1 ]
