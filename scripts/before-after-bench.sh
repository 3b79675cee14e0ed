#!/usr/bin/env bash
# Before (191afe6 + message counter) and after (main), alternating, same GGUF-derived Llama-1B layouts.
# Usage: BASE=old/flashlm.dll BASE_LAYOUT=old.flash NEW_LAYOUT=new.flash [RUNGS=hybrid,lookahead] [N=8] scripts/before-after-bench.sh
mkdir -p ${OUT:-/tmp/before-after}
set -u
BASE=${BASE:?path to flashlm.dll built at 191afe6 with scripts/issue10-before-message-counter.patch applied}
NEW=${NEW:-src/FlashLm.Bench/bin/Release/net10.0/flashlm-bench.dll}
RUNGS=${RUNGS:-hybrid,lookahead}
N=${N:-8}
for rep in 1 2 3; do
  FLASHLM_CACHE=${OUT:-/tmp/before-after}/cache-base dotnet $BASE bench --model ${BASE_LAYOUT:?layout converted by the before build} -n $N --reps 1 --rungs $RUNGS --json ${OUT:-/tmp/before-after}/sbs-base-$rep.json > ${OUT:-/tmp/before-after}/sbs-base-$rep.log 2>&1
  echo "rep $rep base exit $?"
  FLASHLM_CACHE=${OUT:-/tmp/before-after}/cache-new dotnet $NEW --model ${NEW_LAYOUT:?layout converted by this build} -n $N --reps 1 --rungs $RUNGS --json ${OUT:-/tmp/before-after}/sbs-new-$rep.json > ${OUT:-/tmp/before-after}/sbs-new-$rep.log 2>&1
  echo "rep $rep new exit $?"
done
python3 - <<PY
import json,statistics as st
for v in ['base','new']:
    rows={}
    for rep in (1,2,3):
        try: d=json.load(open(f'${OUT:-/tmp/before-after}/sbs-{v}-{rep}.json'))
        except Exception as e: print(v,rep,'missing',e); continue
        for r in d['rungs']:
            rows.setdefault(r['name'],[]).append((r['ms_per_token'], r.get('messages_per_token')))
    for k,xs in rows.items():
        print(f"{v:5} {k:10} ms/token median {st.median(x[0] for x in xs):8.1f} (runs {', '.join(f'{x[0]:.1f}' for x in xs)}), messages/token {st.median(x[1] or 0 for x in xs):7.1f}")
PY
