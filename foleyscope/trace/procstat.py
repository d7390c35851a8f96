"""Process statistics read at stage boundaries: CPU time of all threads (and reaped children), the time
threads spent runnable without a core (Linux schedstat), CPU time a hypervisor stole, and a resettable
peak RSS (/proc/self/clear_refs)."""

from __future__ import annotations

import os
import resource
import time


def cpu_seconds() -> float:
    """User+system time of this process's threads and of the children it has reaped."""
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def cpu_wait_seconds() -> float | None:
    """Seconds this process's threads spent runnable but not running (other processes had the cores),
    summed over threads, from /proc/self/task/*/schedstat; None where the kernel does not say."""
    total, seen = 0, False
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for t in tasks:
        try:
            with open(f"/proc/self/task/{t}/schedstat") as f:
                total += int(f.read().split()[1])
                seen = True
        except (OSError, IndexError, ValueError):  # a thread that just exited
            continue
    return total / 1e9 if seen else None


def steal_seconds() -> float | None:
    """Seconds the hypervisor gave this machine's CPUs (those this process may use) to other machines
    while they had work: load no process list shows, from /proc/stat's steal column. None off Linux."""
    try:
        usable = os.sched_getaffinity(0)
        with open("/proc/stat") as f:
            rows = [line.split() for line in f if line.startswith("cpu") and not line.startswith("cpu ")]
        ticks = sum(int(r[8]) for r in rows if len(r) > 8 and int(r[0][3:]) in usable)
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def thread_schedstat() -> tuple[float, float] | None:
    """(seconds on a core, seconds runnable but waiting for one) of the calling thread. The first is its
    CPU clock (exact: the kernel brings it up to date when asked, where /proc's schedstat lags by up to
    a tick); the second comes from /proc/thread-self/schedstat. Wall time minus their sum is time the
    thread was blocked: sleeping, waiting on a lock, a pipe, a socket, the disk or another thread, which
    no CPU counter shows. None where the kernel does not say."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            wait_ns = f.read().split()[1]
    except (OSError, ValueError, IndexError):
        return None
    return time.thread_time(), int(wait_ns) / 1e9


class PeakRss:
    """Peak RSS that can be reset, via /proc/self/clear_refs (Linux); else RSS read at each boundary."""

    def __init__(self) -> None:
        self.resettable = False
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.resettable = self._hwm() is not None
        except OSError:
            pass

    @staticmethod
    def _hwm() -> int | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def reset(self) -> None:
        if self.resettable:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")

    def peak(self) -> int:
        if self.resettable:
            return self._hwm() or 0
        import psutil

        return psutil.Process().memory_info().rss
