"""Stage directories: Parquet parts written atomically, a manifest, and `_SUCCESS` written last.

A stage directory is the only thing stages exchange. Its contract:

* every file is written under a temporary name and renamed, so a reader never sees a partial file;
* `_manifest.json` is written when the stage starts (status "running") and rewritten when it ends;
* `_SUCCESS` is written last; a stage refuses an input directory without it;
* a rerun into an unfinished directory resumes it, part by part, if and only if its resolved config and inputs are
  the same as the manifest's; a finished directory is never overwritten without `overwrite=True`;
* with `--shard I/N`, N processes (a SLURM job array, say) write their own parts into the same directory; each leaves
  `_shards/shard-I-of-N.json` when its parts are written, and the one that finds all N markers finishes the stage
  (`claim_finish`). The others report their shard done and leave `_SUCCESS` to it.

Test hook: with the environment variable `HARDNEG_TEST_KILL_AFTER_PARTS=N`, the process SIGKILLs itself right
after writing its N-th part (`StageWriter.write_table`), so tests can kill a stage at a chosen point. Never set it
outside tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hardneg import __version__
from hardneg.errors import AlreadyFinished, HardnegError
from hardneg.schemas import conform

MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"
SHARDS = "_shards"  # the shards' markers and the finishing lock (--shard I/N)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # shards may write the same manifest at the same time
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_parquet(path: Path, table: pa.Table) -> None:
    """Write `table` to `path` atomically (temp file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


_parts_written = 0


def _test_kill_hook() -> None:
    """HARDNEG_TEST_KILL_AFTER_PARTS=N: SIGKILL this process after its N-th part (a test hook, see the module doc)."""
    global _parts_written
    _parts_written += 1
    if os.environ.get("HARDNEG_TEST_KILL_AFTER_PARTS") == str(_parts_written):
        os.kill(os.getpid(), signal.SIGKILL)


def save_table(path: Path, table: pa.Table) -> int:
    """A part as the executors write it (`hardneg.executor.Save`): atomically, then the test kill hook."""
    write_parquet(path, table)
    _test_kill_hook()
    return table.num_rows


def manifest_digest(stage_dir: Path) -> str:
    return hashlib.sha256((Path(stage_dir) / MANIFEST).read_bytes()).hexdigest()


def read_manifest(stage_dir: Path) -> dict:
    return json.loads((Path(stage_dir) / MANIFEST).read_text())


def require_finished(stage_dir: Path, stage: str | tuple[str, ...]) -> dict:
    """Check that `stage_dir` is a finished output of `stage` and return its manifest."""
    stage_dir = Path(stage_dir)
    stages = (stage,) if isinstance(stage, str) else stage
    if not stage_dir.is_dir():
        raise HardnegError(f"{stage_dir}: no such directory; run `hardneg {stages[0]}` to create it")
    if not (stage_dir / SUCCESS).exists():
        raise HardnegError(
            f"{stage_dir}: no {SUCCESS} file, so the {'/'.join(stages)} stage that writes it did not finish; "
            f"rerun that stage (it resumes) before using its output"
        )
    try:
        manifest = read_manifest(stage_dir)
    except (OSError, json.JSONDecodeError) as exc:
        raise HardnegError(f"{stage_dir / MANIFEST}: unreadable manifest ({exc}); rerun the stage with --overwrite")
    if manifest.get("stage") not in stages:
        raise HardnegError(
            f"{stage_dir}: is the output of `{manifest.get('stage')}`, but a {'/'.join(stages)} output is needed here"
        )
    return manifest


def part_paths(stage_dir: Path) -> list[Path]:
    return sorted(Path(stage_dir).glob("part-*.parquet"))


def read_part(path: Path, schema: pa.Schema) -> pa.Table:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise HardnegError(f"{path}: not a readable Parquet file ({exc}); rerun the stage that wrote it") from None
    return conform(table, schema, str(path))


def read_stage(stage_dir: Path, stage: str | tuple[str, ...], schema: pa.Schema) -> pa.Table:
    """Read all parts of a finished stage directory as one table with `schema`."""
    require_finished(stage_dir, stage)
    parts = [read_part(p, schema) for p in part_paths(stage_dir)]
    return pa.concat_tables(parts) if parts else schema.empty_table()


class StageWriter:
    """Writes one stage directory. Use as a context manager; call `finish()` when every part is written.

    A `HardnegError` raised inside the block removes the directory if this run started it (its input was bad,
    nothing in it is worth resuming); a resumed directory keeps the parts finished before. Any other interruption
    (Ctrl-C, a kill, a full disk) leaves the finished parts for a rerun to resume from.
    """

    def __init__(self, out: Path, stage: str, config: dict, inputs: list[Path] | None = None, overwrite: bool = False,
                 shard: tuple[int, int] = (0, 1), requeue_ok: bool = True):
        self.out = Path(out)
        self.stage = stage
        self.config = config
        self.inputs = [{"path": str(Path(p)), "manifest_sha256": manifest_digest(p)} for p in (inputs or [])]
        self.overwrite = overwrite
        self.started = time.time()
        self.parts: dict[str, int] = {}
        self.resumed = False
        self.shard = shard
        self.shard_stats: dict = {}
        self.requeue_ok = requeue_ok  # a shard of an already finished, identical stage is a no-op (AlreadyFinished)

    # -- lifecycle -------------------------------------------------------------------------------------------
    def __enter__(self) -> "StageWriter":
        out = self.out
        sharded = self.shard[1] > 1
        if out.exists() and not out.is_dir():
            raise HardnegError(f"{out}: exists and is not a directory; choose another --out")
        if sharded and self.overwrite:
            raise HardnegError(f"{out}: --overwrite with --shard would delete the other shards' parts; empty the "
                               f"directory once before starting the shards, without --overwrite")
        if out.exists() and self.overwrite:
            if any(out.iterdir()) and not (out / MANIFEST).exists():
                raise HardnegError(f"{out}: not a hardneg output directory; refusing to delete it, choose another --out")
            shutil.rmtree(out)
        if (out / SUCCESS).exists():
            if sharded and self.requeue_ok and self._same_run(read_manifest(out)):
                i, n = self.shard
                raise AlreadyFinished(f"{out}: {self.stage} already finished with these options; shard {i}/{n} has "
                                      f"nothing to do")
            raise HardnegError(f"{out}: already holds a finished {self.stage} output; pass --overwrite to rebuild it")
        if (out / MANIFEST).exists():
            old = read_manifest(out)
            if not self._same_run(old):
                raise HardnegError(
                    f"{out}: holds an unfinished {old.get('stage')} run with a different config or input; "
                    f"rerun with the same options to resume it, or pass --overwrite to start over"
                )
            self.resumed = True
            if not sharded:  # a file a killed run was writing is written again (other shards may be writing theirs)
                for tmp in out.glob(".*.tmp"):
                    tmp.unlink()
        elif out.exists() and any(p for p in out.iterdir() if not p.name.startswith(".")):
            if not (sharded and (out / MANIFEST).exists()):  # another shard may have just started it
                raise HardnegError(f"{out}: exists and is not empty; choose another --out or empty it")
            self.resumed = True
        try:
            out.mkdir(parents=True, exist_ok=True)
            self._write_manifest(status="running")
        except OSError as exc:
            raise HardnegError(f"{out}: cannot write the output directory ({exc.strerror}); choose another --out")
        return self

    def _same_run(self, manifest: dict) -> bool:
        return (manifest.get("stage"), manifest.get("config"), manifest.get("inputs")) == (
            self.stage, self.config, self.inputs)

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and issubclass(exc_type, HardnegError) and not self.resumed and self.shard[1] == 1:
            if not (self.out / SUCCESS).exists():
                shutil.rmtree(self.out, ignore_errors=True)
        return False

    # -- parts -----------------------------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        """True when the file `name` was already written (by this run or a killed earlier one)."""
        return (self.out / name).exists()

    def path(self, name: str) -> Path:
        return self.out / name

    def write_table(self, name: str, table: pa.Table) -> None:
        self.record(name, save_table(self.out / name, table))

    def record(self, name: str, rows: int) -> None:
        """Note a part written (by this process or by an executor's worker)."""
        self.parts[name] = rows

    def claim_finish(self, expected: list[str], stats: dict | None = None) -> bool:
        """Whether this process finishes the stage: always without shards; with shards, only the shard that finds
        every shard's marker and every `expected` file present, and wins the `_shards/finishing` lock. Each shard
        leaves its marker (with its `stats`) first; the finishing one sums all markers' stats into `shard_stats`."""
        i, n = self.shard
        if n == 1:
            self.shard_stats = dict(stats or {})
            return True
        shards = self.out / SHARDS
        shards.mkdir(exist_ok=True)
        atomic_write_bytes(shards / f"shard-{i}-of-{n}.json",
                           json.dumps({"shard": [i, n], "parts": sorted(self.parts), "stats": stats or {}}).encode())
        markers = [shards / f"shard-{k}-of-{n}.json" for k in range(n)]
        if not all(m.exists() for m in markers):
            return False
        missing = [name for name in expected if not (self.out / name).exists()]
        if missing:
            raise HardnegError(f"{self.out}: all {n} shards reported done but {missing[0]} is missing; rerun the "
                               f"shard that owns it, or the stage without --shard")
        try:
            os.close(os.open(shards / "finishing", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:  # another shard, finishing at the same moment, writes _SUCCESS (if it died doing
            return False         # so, the same command without --shard finishes the stage)
        self.shard_stats = {}
        for m in markers:
            for k, v in json.loads(m.read_text()).get("stats", {}).items():
                self.shard_stats[k] = self.shard_stats.get(k, 0) + v
        return True

    def shard_pending(self) -> dict:
        """What a shard that does not finish the stage returns in place of the manifest."""
        i, n = self.shard
        done = len(list((self.out / SHARDS).glob(f"shard-*-of-{n}.json")))
        return {"stage": self.stage, "status": "shard-done", "shard": [i, n], "shards_done": done,
                "parts": dict(sorted(self.parts.items()))}

    def write_json(self, name: str, obj) -> None:
        atomic_write_bytes(self.out / name, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())

    def finish(self, summary: dict | None = None, models: dict | None = None) -> dict:
        for p in part_paths(self.out):
            if p.name not in self.parts:  # written by an earlier, interrupted run, or by another shard
                self.parts[p.name] = pq.ParquetFile(p).metadata.num_rows
        manifest = self._write_manifest(status="finished", summary=summary or {}, models=models or {})
        atomic_write_bytes(self.out / SUCCESS, b"")
        dir_fd = os.open(self.out, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the renames above are durable once _SUCCESS is
        finally:
            os.close(dir_fd)
        return manifest

    def _write_manifest(self, status: str, **extra) -> dict:
        manifest = {
            "stage": self.stage,
            "hardneg_version": __version__,
            "status": status,
            "config": self.config,
            "inputs": self.inputs,
            **extra,
        }
        if status == "finished":
            manifest["parts"] = dict(sorted(self.parts.items()))
            manifest["wall_seconds"] = round(time.time() - self.started, 3)
        self.write_json(MANIFEST, manifest)
        return manifest
