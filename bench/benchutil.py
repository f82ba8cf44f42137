"""Helpers shared by the benchmark scripts."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], log: Path, cwd: Path | None = None, env: dict | None = None) -> dict:
    """Run `cmd` (in `cwd`, with `env`); return its wall seconds and peak RSS (MiB), from this child's own rusage."""
    start = time.perf_counter()
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=fh, cwd=cwd, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)} (see {log})")
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2)}


def fresh_workdir(work: Path | None, prefix: str) -> Path:
    """`work` emptied (or a new temporary directory): every benchmark run starts from nothing."""
    work = Path(work) if work else Path(tempfile.mkdtemp(prefix=prefix))
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    return work
