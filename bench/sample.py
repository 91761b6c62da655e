"""Samples a process's resident memory and open descriptors every 50 ms until stopped
(SIGTERM or SIGINT), then prints `peak_rss_kib peak_fds cpu_seconds`.

Usage: sample.py PID
"""
import os
import signal
import sys
import time

pid = int(sys.argv[1])
ticks = os.sysconf("SC_CLK_TCK")
peak_rss = 0
peak_fds = 0
running = True


def stop(*_):
    global running
    running = False


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)


def cpu_seconds():
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks


while running:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    peak_rss = max(peak_rss, int(line.split()[1]))
        peak_fds = max(peak_fds, len(os.listdir(f"/proc/{pid}/fd")))
    except OSError:
        break
    time.sleep(0.05)
try:
    cpu = cpu_seconds()
except OSError:
    cpu = -1
print(peak_rss, peak_fds, f"{cpu:.2f}")
