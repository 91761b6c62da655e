"""Resident memory and descriptors of a worker and its executors, read from /proc (a helper the
bench scripts import)."""
import os


def children(pid):
    """The pids of a process's direct children."""
    kids = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(k) for k in f.read().split()]
    except OSError:
        pass
    return kids


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


def fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def threads(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def worker_of(supervisor):
    """The newest child of the supervisor (its worker), or None."""
    kids = children(supervisor)
    return kids[-1] if kids else None


def usage(supervisor):
    """(worker pid, worker RSS KiB, executors' RSS KiB, executor count, worker fds, worker threads)."""
    worker = worker_of(supervisor)
    if worker is None:
        return None, 0, 0, 0, 0, 0
    executors = children(worker)
    return (worker, rss_kib(worker), sum(rss_kib(e) for e in executors), len(executors),
            fds(worker), threads(worker))
