"""What the benchmark reads from /proc: process trees, memory high-water marks, CPU seconds."""

from __future__ import annotations

import asyncio
import os
import time

# The broker's and the database server's processes, by command name.
INFRA = {"rabbitmq": ("beam.smp", "erl_child_setup", "epmd"), "postgres": ("postgres",)}


def proc_tree(pid: int) -> list[int]:
    """pid and all its live descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if not os.path.exists(f"/proc/{p}"):
            continue
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def vm_status(pid: int) -> dict:
    res: dict = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:", "Name:", "Threads:")):
                    k, v = line.split(":", 1)
                    res[k] = v.strip() if k == "Name" else int(v.split()[0])
    except OSError:
        pass
    return res


def cpu_seconds(pid: int) -> float:
    """utime+stime of pid plus its waited-for children (cutime+cstime)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


def user_system(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of pid alone: system time is where socket and file I/O shows."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def infra_cpu() -> dict[str, dict[int, float]]:
    """CPU seconds per pid of the broker and the database server processes."""
    res: dict[str, dict[int, float]] = {k: {} for k in INFRA}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        for k, names in INFRA.items():
            if comm in names:
                res[k][int(entry)] = cpu_seconds(int(entry))
    return res


def infra_delta(before: dict, after: dict) -> dict[str, float]:
    return {k: round(sum(v - before[k].get(p, 0.0) for p, v in after[k].items()), 3) for k in after}


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals) - idle, sum(vals)


def memory_report(pid: int) -> dict:
    procs = []
    for p in proc_tree(pid):
        st = vm_status(p)
        if st:
            procs.append(
                {
                    "pid": p,
                    "name": st.get("Name"),
                    "vm_hwm_kib": st.get("VmHWM"),
                    "vm_rss_kib": st.get("VmRSS"),
                    "threads": st.get("Threads"),
                }
            )
    hwm = sum(p["vm_hwm_kib"] or 0 for p in procs)
    rss = sum(p["vm_rss_kib"] or 0 for p in procs)
    return {"peak_rss_mib": round(hwm / 1024, 1), "rss_now_mib": round(rss / 1024, 1), "processes": procs}


async def sample_rss(pid: int, out: list, interval: float = 0.5) -> None:
    """VmRSS of the process tree every interval seconds, in MiB."""
    t0 = time.perf_counter()
    while True:
        rss = sum(vm_status(p).get("VmRSS", 0) for p in proc_tree(pid))
        out.append((round(time.perf_counter() - t0, 1), round(rss / 1024, 1)))
        await asyncio.sleep(interval)


def thin(points: list, limit: int = 40) -> list:
    if len(points) > limit:
        step = len(points) / limit
        points = [points[int(k * step)] for k in range(limit)] + [points[-1]]
    return [list(p) for p in points]


class CpuWindow:
    """CPU used by a process tree, the broker, the database and the whole machine between
    `start()` and `stop()`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def start(self) -> None:
        self.pids = proc_tree(self.pid)
        self.t0 = (tree_cpu(self.pids), infra_cpu(), machine_cpu(), time.perf_counter(), user_system(self.pid))

    def stop(self) -> dict:
        us1 = user_system(self.pid)
        cpu1, i1, m1, w1 = tree_cpu(proc_tree(self.pid)), infra_cpu(), machine_cpu(), time.perf_counter()
        cpu0, i0, m0, w0, us0 = self.t0
        busy, total = m1[0] - m0[0], m1[1] - m0[1]
        return {
            "target_s": round(cpu1 - cpu0, 3),
            "target_user_s": round(us1[0] - us0[0], 3),
            "target_system_s": round(us1[1] - us0[1], 3),
            **{f"{k}_s": v for k, v in infra_delta(i0, i1).items()},
            "machine_busy_pct": round(100.0 * busy / total, 1) if total else None,
            "wall_s": round(w1 - w0, 3),
        }
