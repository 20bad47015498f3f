#!/usr/bin/env python3
"""Connection admission latency of a jailed vfiod: connect to its fd channel and wait for the
hello, sequentially, N times (each connection: accept, peer credentials, uid check, registry,
hello). Not a test: nothing asserts on time.

  taskset -c 0 tools/admission_bench.py bazel-bin/daemon/vfiod 2000

Pin it (taskset: the daemon and its launcher inherit the CPU) and repeat the run; compare two
binaries in turns. Prints the median, p90 and mean in microseconds after 100 warm-up
connections.
"""
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def main():
    binary, count = sys.argv[1], int(sys.argv[2])
    folder = tempfile.mkdtemp(prefix="vfiod-admission-", dir="/tmp")
    path = os.path.join(folder, "s")
    daemon = subprocess.Popen(
        [binary, "--device=sim:edu", "--listen=" + path, "--log-level=warning"],
        stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if os.path.exists(path + ".fds"):
                break
            time.sleep(0.05)
        time.sleep(0.5)  # the socket exists before the daemon serves
        samples = []
        for i in range(count + 100):
            start = time.perf_counter()
            channel = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            channel.connect(path + ".fds")
            if not channel.recv(64):
                sys.exit("the daemon closed the fd channel without a hello")
            elapsed = time.perf_counter() - start
            channel.close()
            if i >= 100:
                samples.append(elapsed * 1e6)
    finally:
        daemon.terminate()
        daemon.wait()
        os.rmdir(folder)
    samples.sort()
    print("%s: n=%d median=%.1fus p90=%.1fus mean=%.1fus" %
          (binary, count, statistics.median(samples), samples[int(0.9 * len(samples))],
           statistics.mean(samples)))


if __name__ == "__main__":
    main()
