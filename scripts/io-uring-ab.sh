#!/usr/bin/env bash
# A/B: the runtime's way of reading (N threads, one blocking O_DIRECT pread each: fio's psync engine) against io_uring
# (one thread submitting N reads at a time in batches: fio's io_uring engine) and libaio, on the same file, block size and
# reads in flight, alternating, page cache dropped before each run. Prints MB/s, median latency and CPU per read.
# Usage: scripts/io-uring-ab.sh FILE [BLOCK=24k] [INFLIGHT=32] [SECONDS=8] [REPS=3]
# Needs fio (Debian: apt-get install -y fio; its io_uring engine uses the kernel's io_uring, as liburing does).
set -euo pipefail
file=${1:?usage: io-uring-ab.sh FILE [BLOCK] [INFLIGHT] [SECONDS] [REPS]}
bs=${2:-24k}; n=${3:-32}; secs=${4:-8}; reps=${5:-3}
command -v fio >/dev/null || { echo "fio is missing: apt-get install -y fio" >&2; exit 2; }
command -v jq >/dev/null || { echo "jq is missing: apt-get install -y jq" >&2; exit 2; }
size=$(stat -c %s "$file")
echo "file $file ($((size >> 20)) MiB), random ${bs} O_DIRECT reads, ${n} in flight, ${secs} s per run, ${reps} reps; $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
run() { # engine jobs depth extra...
  local engine=$1 jobs=$2 depth=$3 t; shift 3
  t=$(mktemp)
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  # CPU: user + system seconds of the whole fio process (all its threads), from /usr/bin/time.
  /usr/bin/time -f '%U %S' -o "$t" fio --name=ab --filename="$file" --readonly --rw=randread --bs="$bs" --direct=1 --ioengine="$engine" \
      --numjobs="$jobs" --iodepth="$depth" --thread --time_based --runtime="$secs" --group_reporting --randrepeat=0 --output-format=json "$@" 2>/dev/null |
    jq -r --arg e "$engine" --argjson j "$jobs" --argjson d "$depth" '.jobs[0] as $x |
      [$e, $j, $d, ($x.read.bw_bytes / 1e6 | floor), ($x.read.clat_ns.percentile["50.000000"] / 1000 | floor), $x.read.total_ios] | @tsv' > "$t.out"
  # /usr/bin/time writes its file when fio exits, after jq has read its input: join them here.
  local cpu; cpu=$(awk '{print $1 + $2}' "$t")
  awk -v cpu="$cpu" -F'\t' '{printf "%s\t%s\t%s\t%s\t%s\t%.1f\n", $1, $2, $3, $4, $5, cpu * 1e6 / ($6 + 1)}' "$t.out"
  rm -f "$t" "$t.out"
}
printf 'engine\tthreads\tdepth\tMB/s\tmedian latency us\tCPU us per read\n'
for r in $(seq "$reps"); do
  run psync "$n" 1
  run io_uring 1 "$n" --iodepth_batch_submit="$n" --iodepth_batch_complete_min=1
  run libaio 1 "$n" --iodepth_batch_submit="$n" --iodepth_batch_complete_min=1
done
