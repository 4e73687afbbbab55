"""Sampling the process under test with py-spy, and summing its stacks into where the CPU went.

Four views of the same samples: by leaf frame (self), by frame anywhere on the stack
(inclusive), by *site*: the innermost frame in the service's own code (`app/`) paired with
the package the leaf frame belongs to, e.g. `PaymentLedger._claim_many` × `asyncpg`, and by
*bucket* (logging, metrics, outcome publish, database, AMQP I/O, consume chain, ...).
Samples in which a thread waits (a lock, a queue, select/poll) are counted apart, not as CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from infra import SetupError, tail

_WAIT_LEAVES = ("Condition.wait", "Event.wait", "Queue.get", "select (", "poll (", "_worker (")
_FRAME = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")
_PACKAGE = re.compile(r"\(([^/()]+)/")


def pyspy_path() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def frame_key(frame: str) -> str:
    """'func (path/to/pkg/mod.py:123)' -> 'func (pkg/mod.py)'."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    func, path = m.groups()
    for marker in ("site-packages/", "/app/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/app/":
                path = "app/" + path
            break
    return f"{func} ({path})"


def package_of(frame: str) -> str:
    m = _PACKAGE.search(frame)
    return m.group(1) if m else frame.rsplit("(", 1)[-1].rstrip(")")


def site_of(frames: list[str]) -> str:
    """The innermost frame in the service's own code (the caller that caused the work)."""
    for frame in reversed(frames):
        if "(app/" in frame and "(app/cli.py" not in frame:  # the entry point runs everything
            return frame.split(" (", 1)[0]
    return "(outside app/)"


# Where a sample's CPU goes. The *leaf* is the innermost frame of a library or of app/ (the
# standard library's helpers — contextlib, typing, json, dataclasses — count for their caller).
# Logging and metrics are known by their leaf; then the service's own call sites decide
# (the outcome publish, a log line's JSON); then the leaf's package.
_LIBRARIES = ("(loguru/", "(prometheus_client/", "(faststream/", "(aio_pika/", "(aiormq/", "(pamqp/", "(asyncpg/",
              "(fast_depends/", "(app/", "(uuid.py", "(asyncio/", "(uvicorn/", "(starlette/", "(pydantic")  # fmt: skip
_BY_LEAF = (
    ("logging (loguru, the JSON line)", ("(loguru/",)),
    ("metrics (prometheus_client)", ("(prometheus_client/", "(faststream/prometheus/")),
)
_BY_CALLER = (
    (
        "logging (loguru, the JSON line)",
        ("(app/observability/logs.py", "(app/observability/fastlog.py", "_log_result ("),
    ),
    ("outcome publish (the outcome channel, aiormq)", ("OutcomePublisher.publish (", "OutcomeChannel.")),
    ("database statements (asyncpg)", ("(asyncpg/",)),
    ("AMQP socket writes (aiormq's writer task)", ("Connection.__writer (aiormq/",)),
)
_BY_PACKAGE = (
    ("AMQP frames in (aiormq reader, pamqp)", ("(aiormq/", "(pamqp/")),
    ("consume chain (FastStream subscriber, aio-pika message)", ("(faststream/", "(aio_pika/", "(fast_depends/")),
    ("ids (uuid4, uuid5)", ("(uuid.py",)),
    ("service code (app/)", ("(app/", "(pydantic")),
    ("HTTP (uvicorn, starlette)", ("(uvicorn/", "(starlette/")),
    ("event loop (uvloop, asyncio)", ("(asyncio/",)),
)
BUCKETS = tuple(dict.fromkeys(name for name, _ in (*_BY_LEAF, *_BY_CALLER, *_BY_PACKAGE)))


def bucket_of(frames: list[str]) -> str:
    leaf = next((f for f in reversed(frames) if any(m in f for m in _LIBRARIES)), frames[-1])
    for name, markers in _BY_LEAF:
        if any(m in leaf for m in markers):
            return name
    for name, markers in _BY_CALLER:
        if any(m in f for f in frames for m in markers):
            return name
    for name, markers in _BY_PACKAGE:
        if any(m in leaf for m in markers):
            return name
    return "other"


def read_stacks(raw_path: Path) -> list[tuple[list[str], int]]:
    """(frames root first, sample count) of a py-spy raw (collapsed stacks) file."""
    stacks = []
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [frame_key(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if frames:
            stacks.append((frames, int(count)))
    return stacks


def summarize_profile(raw_path: Path, top: int = 25) -> dict:
    """Top self, inclusive, by-package and by-site shares (percent of CPU samples)."""
    try:
        stacks = read_stacks(raw_path)
    except OSError:
        return {"error": f"no profile written to {raw_path}"}
    self_c: Counter = Counter()
    incl: Counter = Counter()
    pkg: Counter = Counter()
    site: Counter = Counter()
    site_pkg: Counter = Counter()
    buckets: Counter = Counter()
    total = waiting = 0
    for frames, n in stacks:
        if any(w in frames[-1] for w in _WAIT_LEAVES):
            waiting += n  # a thread blocked in a lock or queue: not CPU work
            continue
        total += n
        self_c[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
        leaf_pkg = package_of(frames[-1])
        pkg[leaf_pkg] += n
        where = site_of(frames)
        site[where] += n
        site_pkg[f"{where} × {leaf_pkg}"] += n
        buckets[bucket_of(frames)] += n

    def pct(c: Counter, limit: int = top) -> list[list]:
        return [[k, round(100.0 * v / total, 1)] for k, v in c.most_common(limit)] if total else []

    return {
        "samples": total,
        "blocked_thread_samples": waiting,
        "raw": str(raw_path),
        "self_pct": pct(self_c),
        "inclusive_pct": pct(incl, 2 * top),
        "self_pct_by_package": pct(pkg),
        "by_site_pct": pct(site),
        "by_site_and_package_pct": pct(site_pkg, 2 * top),
        "buckets_pct": pct(buckets),
    }


class Profiler:
    """py-spy recording one process (and its children) until `stop()`."""

    def __init__(self, args: argparse.Namespace, pid: int, label: str, kind: str):
        exe = pyspy_path()
        if exe is None:
            raise SetupError("--profile needs py-spy (scripts/bootstrap installs it)")
        self.raw = Path(args.work_dir) / f"{label}.{kind}.pyspy.txt"
        self.raw.unlink(missing_ok=True)
        self.err = Path(args.work_dir) / f"{label}.{kind}.pyspy.log"
        cmd = [exe, "record", "--pid", str(pid), "--format", "raw", "-o", str(self.raw)]
        cmd += ["--rate", str(args.profile_rate), "--nonblocking", "--subprocesses"]
        with open(self.err, "wb") as errf:
            self.proc = subprocess.Popen(cmd, stdout=errf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    async def stop(self) -> dict:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        for _ in range(300):
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        else:
            self.proc.kill()
            self.proc.wait()
        res = summarize_profile(self.raw)
        if "error" in res:
            res["log"] = tail(self.err, 5)
        return res


if __name__ == "__main__":  # summarise a raw file again: python bench/profiling.py RAW [TOP]
    import json

    print(json.dumps(summarize_profile(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 25), indent=2))
