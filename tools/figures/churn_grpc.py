#!/usr/bin/env python3
"""Churn figure over gRPC (a benchmark, not a test): N owner processes, each of which connects,
claims the device, binds its fd channel, registers a sealed memfd, maps DMA, turns decode on and
enables an MSI eventfd (tests/owner_process.cc), and is then killed with SIGKILL; then N observer
connections (vfioctl info); then 3 x N more owners. Prints the serving daemon's fds, threads and
RSS before and after each round; a plateau shows nothing accumulates.

  bazel build //daemon:vfiod //client:vfioctl //tests:owner_process
  bazel-bin/daemon/vfiod --device=sim:edu --listen=/tmp/chg.sock &
  tools/figures/churn_grpc.py /tmp/chg.sock bazel-bin/tests/owner_process bazel-bin/client/vfioctl 1000
"""
import signal, subprocess, sys, time

from serving_daemon import serving_pid, stats

sock, owner_bin, vfioctl, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


def owners(count):
    failed = 0
    for _ in range(count):
        p = subprocess.Popen([owner_bin, sock], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = p.stdout.readline()
        if line.strip() != b'READY':
            failed += 1
            sys.stderr.write(p.stderr.read().decode(errors='replace')[-300:])
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
        p.stderr.close()
    return failed


pid = serving_pid(sock)
print('daemon', pid, 'before: fds, threads, RSS kB =', stats(pid))
t = time.time()
bad = owners(n)
print(f'{n} owner processes (SIGKILLed) in {time.time() - t:.1f}s, {bad} failed before READY')
time.sleep(1)
print('after them: fds, threads, RSS kB =', stats(pid))
t = time.time()
for _ in range(n):
    subprocess.run([vfioctl, '--socket', sock, 'info'], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
print(f'{n} observer connections in {time.time() - t:.1f}s')
time.sleep(1)
print('after them: fds, threads, RSS kB =', stats(pid))
for r in range(3):
    bad = owners(n)
    time.sleep(1)
    print(f'after {n} more owners ({bad} failed): fds, threads, RSS kB =', stats(pid))
