"""Where and which units of a stage run: in this process or on a Ray cluster (`--executor`), all of them or one shard
(`--shard I/N`).

A stage splits its work into *units*, one per output file: a chunk of documents for `index`'s encoder, a query batch
for `mine`, a mined part for `score`. A unit is computed by a *worker*: an object built once per process from a
small picklable spec (it loads the model, the index or the texts) and called once per unit. Both executors call the
same worker on the same units and write the same files, so a Ray run and a local run give byte-identical parts.

* local: one worker in this process, the units in order, a progress bar.
* ray: Ray Data `map_batches` over the units with a pool of stateful actors (`concurrency`); each actor builds its
  worker once (`num_gpus` per actor when the cluster has GPUs) and writes its parts itself into the stage directory
  (atomically, as the local executor does), so on a cluster that directory must be on a filesystem every node sees.
  The driver only collects names, row counts and statistics. `ray.init()` connects to `RAY_ADDRESS` when it is set
  (`auto`, `host:6379`, `ray://host:10001`) and otherwise starts a local instance.
* shard I/N: only the units whose number n has n % N == I. Each shard writes its own parts, then a marker
  `_shards/shard-I-of-N.json`; the shard that finds all N markers (and every unit's file) finishes the stage and writes
  `_SUCCESS` (see `StageWriter.claim_finish`).

Heavy imports (ray) happen only when the Ray executor runs: the default install and `hardneg --help` never import it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from hardneg.errors import HardnegError

# a unit: (file name relative to the stage directory, payload handed to the worker)
Unit = tuple[str, Any]
# save(path, result) writes a worker's result atomically and returns its row count
Save = Callable[[Path, Any], int]


@dataclass(frozen=True)
class Execution:
    executor: str = "local"
    shard: tuple[int, int] = (0, 1)
    ray_actors: int = 0  # actor pool size; 0 = as many as the cluster's CPUs (or GPUs) allow
    ray_cpus_per_actor: float = 1.0
    ray_gpus_per_actor: float | None = None  # None: 1 when the cluster has GPUs and the device is not cpu, else 0

    @property
    def sharded(self) -> bool:
        return self.shard[1] > 1

    def owns(self, n: int) -> bool:
        """Whether unit number `n` (numbered over all of the stage's units) belongs to this shard."""
        return n % self.shard[1] == self.shard[0]

    def describe(self) -> str:
        return f"shard {self.shard[0]}/{self.shard[1]}" if self.sharded else "all units"


LOCAL = Execution()


def parse_shard(text: str | None) -> tuple[int, int]:
    """'I/N' (0 <= I < N) -> (I, N); None -> (0, 1)."""
    if not text:
        return (0, 1)
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise HardnegError(f"--shard {text}: expected I/N, e.g. --shard 0/4 (I from 0 to N-1)") from None
    if n < 1 or not 0 <= i < n:
        raise HardnegError(f"--shard {text}: I must be in 0..N-1 and N >= 1, e.g. --shard 3/4 "
                           f"(SLURM: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
    return (i, n)


def run_units(units: list[Unit], worker: type, spec: dict, out: Path, save: Save, execution: Execution,
              done: Callable[[str], bool], desc: str, record: Callable[[str, int, dict], None] | None = None) -> dict:
    """Compute this shard's units whose file `done(name)` does not report written; return the summed statistics.

    `worker(**spec)` builds a worker; `worker(payload)` returns `(result, stats)`, `save(out / name, result)` writes it.
    `record(name, rows, stats)` is told of every file written and its unit's statistics (the stage's part list, and
    what its summary adds up: `StageWriter.record`, `StageWriter.unit_totals`). Paths in `spec` and payloads must be
    absolute: Ray actors may run in another directory, or on another node that mounts the same filesystem. A worker
    class with `cpu_only = True` gets no GPU on Ray unless --ray-gpus-per-actor asks for one."""
    todo = [(name, payload) for n, (name, payload) in enumerate(units) if execution.owns(n) and not done(name)]
    if not todo:
        return {}
    if execution.executor == "ray":
        return _run_ray(todo, worker, spec, out, save, execution, desc, record)
    w = worker(**spec)
    stats: dict = {}
    for name, payload in tqdm(todo, desc=desc, unit="unit", disable=len(todo) < 2):
        result, s = w(payload)
        rows = save(Path(out) / name, result)
        if record is not None:
            record(name, rows, s or {})
        add_stats(stats, s)
    return stats


def add_stats(total: dict, more: dict) -> dict:
    """Add the statistics `more` into `total`: numbers are summed, dicts (counts by key) added key by key, lists
    concatenated. Returns `total`."""
    for k, v in (more or {}).items():
        if isinstance(v, dict):
            add_stats(total.setdefault(k, {}), v)
        elif isinstance(v, list):
            total[k] = total.get(k, []) + v
        else:
            total[k] = total.get(k, 0) + v
    return total


# -- Ray --------------------------------------------------------------------------------------------------------

class _RayUnits:
    """The Ray Data actor: builds the worker once, then computes and writes one unit per batch. A HardnegError (bad
    input, a missing model) is returned as a value, not raised: the driver reports it as one line, and Ray does not
    retry a task that would fail again."""

    def __init__(self, worker: type, spec: dict, out: str, save: Save):
        self.out = Path(out)
        self.save = save
        self.error = None
        try:
            self.worker = worker(**spec)
        except HardnegError as exc:
            self.error = str(exc)

    def __call__(self, batch: dict) -> dict:
        import json

        rows, stats, errors = [], [], []
        for name, payload in zip(batch["name"], batch["payload"]):
            error, n, s = self.error, 0, {}
            if error is None:
                try:
                    result, s = self.worker(_unbox(payload))
                    n = self.save(self.out / name, result)
                except HardnegError as exc:
                    error = str(exc)
            rows.append(n)
            stats.append(json.dumps(s or {}))
            errors.append(error or "")
        return {"name": list(batch["name"]), "rows": rows, "stats": stats, "error": errors}


def _box(payload):
    """Payloads travel through Ray Data as pickled bytes, whatever their type (a list of ids, a path, texts)."""
    import pickle

    return pickle.dumps(payload)


def _unbox(blob):
    import pickle

    return pickle.loads(blob)


def ray_init():
    """Connect to RAY_ADDRESS, or start a local Ray instance (once per process); quiet progress and logs."""
    try:
        import ray
    except ImportError:
        raise HardnegError("--executor ray needs Ray: pip install 'hardneg[ray]'") from None
    if not ray.is_initialized():
        import signal
        import threading

        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # the C++ core logs; failures still raise
        main = threading.current_thread() is threading.main_thread()
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
        try:
            ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR", configure_logging=True)
        except ConnectionError as exc:
            raise HardnegError(f"RAY_ADDRESS={os.environ.get('RAY_ADDRESS')}: cannot connect to Ray ({exc}); start "
                               f"it with `ray start --head` or unset RAY_ADDRESS for a local instance") from None
        finally:
            for s, h in handlers.items():  # Ray's own SIGTERM handler exits without a word: keep hardneg's clean stop
                if h is not None:
                    signal.signal(s, h)
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.print_on_execution_start = False
    ctx.enable_progress_bars = False  # the driver shows one bar of units
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return ray


def _pool(ray, execution: Execution, worker: type, spec: dict, n_units: int) -> tuple[int, float, float]:
    """(actors, cpus, gpus per actor) for this cluster."""
    resources = ray.cluster_resources()
    cfg = spec.get("cfg")
    cpu_only = (getattr(worker, "cpu_only", False) or str(getattr(cfg, "device", None) or "").startswith("cpu")
                or getattr(cfg, "backend", "torch") != "torch")
    gpus = execution.ray_gpus_per_actor
    if gpus is None:
        gpus = 1.0 if resources.get("GPU", 0) >= 1 and not cpu_only else 0.0
    cpus = execution.ray_cpus_per_actor
    if execution.ray_actors:
        actors = execution.ray_actors
    elif gpus:
        actors = int(resources.get("GPU", 0) // gpus)
    else:
        actors = int(resources.get("CPU", 1) // cpus)
    return max(1, min(actors, n_units)), cpus, gpus


def _run_ray(todo: list[Unit], worker: type, spec: dict, out: Path, save: Save, execution: Execution, desc: str,
             record) -> dict:
    import json

    ray = ray_init()
    actors, cpus, gpus = _pool(ray, execution, worker, spec, len(todo))
    items = [{"name": name, "payload": _box(payload)} for name, payload in todo]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    actor_args = {"worker": worker, "spec": spec, "out": str(Path(out).absolute()), "save": save}
    ds = ds.map_batches(_RayUnits, fn_constructor_kwargs=actor_args, batch_size=1, concurrency=actors, num_cpus=cpus,
                        num_gpus=gpus)
    stats: dict = {}
    with tqdm(total=len(todo), desc=f"{desc} (ray, {actors} actors)", unit="unit", disable=len(todo) < 2) as bar:
        for row in ds.iter_rows():
            if row["error"]:
                raise HardnegError(row["error"])
            unit_stats = json.loads(row["stats"])
            if record is not None:
                record(row["name"], int(row["rows"]), unit_stats)
            add_stats(stats, unit_stats)
            bar.update(1)
    return stats
