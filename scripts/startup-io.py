#!/usr/bin/env python3
# Usage: scripts/startup-io.py flashlm generate --model LAYOUT --mode flash --prompt "The" -n 2 --predictor all
# (drop the page cache first for cold figures: sync; echo 1 > /proc/sys/vm/drop_caches)
"""Start-up I/O of `flashlm generate --mode flash`: /proc/PID/io when the runtime has opened (its first
stderr line, printed right after FlashRuntime.Open returns) and when the first stdout byte arrives."""
import os, subprocess, sys, time, threading

def io(pid):
    d = {}
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            k, v = line.split(":")
            d[k] = int(v)
    return d

cmd = sys.argv[1:]
t0 = time.monotonic()
p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
opened = {}
def err():
    for line in p.stderr:
        if not opened and line.startswith(b"flash "):
            opened.update(io(p.pid)); opened["t"] = time.monotonic() - t0
        sys.stderr.write("  | " + line.decode(errors="replace"))
th = threading.Thread(target=err); th.start()
p.stdout.read(1)
first = io(p.pid); first["t"] = time.monotonic() - t0
rest = p.stdout.read()
p.wait(); th.join()
for name, d in (("runtime opened", opened), ("first stdout byte", first)):
    if d:
        print(f"{name:18s}: t={d['t']:.2f}s rchar={d['rchar']/2**20:.1f} MiB read_bytes={d['read_bytes']/2**20:.1f} MiB syscr={d['syscr']}")
print("exit", p.returncode)
