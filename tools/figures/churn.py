#!/usr/bin/env python3
"""Churn figure (a benchmark, not a test): N vfio-user owner sessions, each as QEMU starts one
(VERSION, a DMA map of a sealed memfd, memory decode, an MSI eventfd) and then vanishes, then N
gRPC observer connections (vfioctl info), then 3 x N more owner sessions; prints the serving
daemon's fds, threads and RSS before and after each round.

  bazel build //daemon:vfiod //client:vfioctl
  bazel-bin/daemon/vfiod --device=sim:edu --listen=/tmp/ch.sock --vfio-user=/tmp/ch.vfu &
  tools/figures/churn.py /tmp/ch.vfu /tmp/ch.sock bazel-bin/client/vfioctl 1000
"""
import socket, struct, os, fcntl, sys, time, subprocess
from serving_daemon import serving_pid, stats
vfu, grpc_sock, vfioctl, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
pid=serving_pid(vfu)
print("daemon", pid, "before: fds, threads, RSS kB =", stats(pid))
def session():
    s=socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(vfu)
    mid=[0]
    def cmd(c, payload=b'', fds=[]):
        mid[0]+=1
        h=struct.pack('<HHIII', mid[0], c, 16+len(payload), 0, 0)
        if fds: s.sendmsg([h+payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack('i'*len(fds), *fds))])
        else: s.sendall(h+payload)
        hdr=s.recv(16, socket.MSG_WAITALL); i,c2,size,fl,err=struct.unpack('<HHIII', hdr)
        if size>16: s.recv(size-16, socket.MSG_WAITALL)
        return err
    errs=[]
    errs.append(cmd(1, struct.pack('<HH',0,0)+b'{"capabilities":{"max_msg_fds":16}}\0'))
    fd=os.memfd_create("ram", os.MFD_ALLOW_SEALING); os.ftruncate(fd, 1<<20); fcntl.fcntl(fd, 1033, 0x2)
    errs.append(cmd(2, struct.pack('<IIQQQ',32,3,0,0x100000,1<<20), [fd]))
    errs.append(cmd(10, struct.pack('<QII',4,7,2)+struct.pack('<H',6)))
    efd=os.eventfd(0)
    errs.append(cmd(8, struct.pack('<IIIII',20,0x24,1,0,1), [efd]))
    os.close(fd); os.close(efd); s.close()
    return errs
t=time.time(); bad=0
for i in range(n):
    for attempt in range(200):
        try:
            e=session()
            if e[0]==16: time.sleep(0.005); continue  # the last owner's loss still running
            if any(e): bad+=1
            break
        except OSError: time.sleep(0.005)
print(f"{n} owner sessions in {time.time()-t:.1f}s, {bad} with an error reply")
time.sleep(0.5)
t=time.time()
for i in range(n if len(sys.argv) < 6 else 0):
    subprocess.run([vfioctl, '--socket', grpc_sock, 'info'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(f"{n} observer connections in {time.time()-t:.1f}s")
time.sleep(1)
print("after: fds, threads, RSS kB =", stats(pid))
for r in range(3):
    for i in range(n):
        for attempt in range(200):
            try:
                if session()[0] != 16: break
            except OSError: pass
            time.sleep(0.005)
    time.sleep(0.5)
    print(f"after {n} more owner sessions: fds, threads, RSS kB =", stats(pid))
