#!/usr/bin/env bash
# Issue 10: before/after with the disk taken out. Both builds read the same layout's ffn.bin from the page cache
# (loader.direct-io=off, file pre-read), hybrid settings (every neuron, no window), 8 positions, 3 alternating reps:
# what is left is the pipeline's own cost (messages, cache, compute) and the read-time check.
# Usage: BASE=path/to/before/flashlm.dll LAYOUT=llama-1b.flash [BUDGET=932372807] scripts/issue10-cached-ab.sh
set -u
BASE=${BASE:?flashlm.dll built at 191afe6 with scripts/issue10-before-message-counter.patch applied}
NEW=${NEW:-src/FlashLm.Cli/bin/Release/net10.0/flashlm.dll}
LAYOUT=${LAYOUT:?a layout converted by the after build (the before build reads it too)}
B=${BUDGET:-932372807}
cat $LAYOUT/ffn.bin > /dev/null
for rep in 1 2 3; do for v in base new off; do
  D=$NEW; [ $v = base ] && D=$BASE
  X=""; [ $v = off ] && X="--set loader.verify-reads=off"
  dotnet $D generate --model $LAYOUT --mode flash -n 8 --prompt "a" --dram-budget $B --set predictor=all --set window=0 \
    --set lookahead=off --set loader.direct-io=off $X --stats /tmp/cached-ab-$v-$rep.jsonl > /dev/null 2>&1
  python3 -c "
import json,statistics as st
rs=[json.loads(l) for l in open('/tmp/cached-ab-$v-$rep.jsonl')][2:]
print('$v $rep', *(f'{k} {st.median(r[k] for r in rs):.0f}' for k in ('total_ms','io_ms','mem_ms','compute_ms','wait_ms')))"
done; done
