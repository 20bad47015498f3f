"""The serving vfiod process of a running daemon and its resource use, for the churn figures."""
import glob
import os


def serving_pid(socket_path):
    """The jailed serving process: the child of the launcher whose command line names
    `socket_path`; None when there is none."""
    for p in glob.glob('/proc/[0-9]*/cmdline'):
        try:
            c = open(p, 'rb').read()
        except OSError:
            continue
        if b'vfiod' in c and socket_path.encode() in c:
            pid = p.split('/')[2]
            kids = open(f'/proc/{pid}/task/{pid}/children').read().split()
            if kids:
                return kids[0]
    return None


def stats(pid):
    """(open fds, threads, VmRSS in kB) of process `pid`."""
    fds = len(os.listdir(f'/proc/{pid}/fd'))
    st = open(f'/proc/{pid}/status').read().splitlines()
    field = lambda name: int([l for l in st if l.startswith(name)][0].split()[1])
    return fds, field('Threads'), field('VmRSS')
