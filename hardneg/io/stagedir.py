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

Trust only what was verified:

* one writer per directory: every writer holds `_lock` (a `flock`, released by the kernel when its process ends,
  so a SIGKILLed run never leaves a stale lock); while held it names the holder (pid@host). A second writer is
  refused with one line naming it. The shards of one stage share the lock (shared mode) and each shard id holds an
  exclusive lease `_shards/lease-I-of-N`, so two copies of the same shard are refused too. `--overwrite` takes the
  lock before deleting anything (it clears everything but `_lock`), and never deletes or writes inside a directory
  the same command reads (`check_not_input`);
* the finished manifest lists every file of the stage (`files`: bytes and sha256, all files but the top-level ones
  whose names start with `_` or `.`); `require_finished` refuses a missing, extra (`part-*.parquet` not listed),
  resized or altered file with one line: sizes are checked on every call, sha256 once per file per process
  (memoized on path, size, mtime and inode);
* lineage by content: a stage records each input as its `content_digest` (stage, config and the sha256 of its
  files; the paths do not count, so a moved run is the same input) and the `dataset` (the content digest of the
  imported data) it descends from; inputs of different datasets are refused.

Test hook: with the environment variable `HARDNEG_TEST_KILL_AFTER_PARTS=N`, the process SIGKILLs itself right
after writing its N-th part (`StageWriter.write_table`), so tests can kill a stage at a chosen point; with
`HARDNEG_TEST_STALL_AFTER_PARTS=N` and `HARDNEG_TEST_STALL_UNTIL=FILE`, it waits there (up to 10 minutes) until FILE
exists, so tests can hold a writer mid-stage. Never set them outside tests.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from hardneg import __version__
from hardneg.errors import AlreadyFinished, HardnegError
from hardneg.executor import add_stats
from hardneg.schemas import conform

MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"
SHARDS = "_shards"  # the shards' markers and the finishing lock (--shard I/N)
LOCK = "_lock"  # the writer lock (flock); names its holder while held


def peak_rss_mib() -> float | None:
    """This process's peak resident set size in MiB (None where the platform does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)  # bytes on macOS, KiB on Linux


@contextlib.contextmanager
def atomic_file(path: Path, unique: bool = False):
    """The one way hardneg writes a file: yields a temporary path beside `path` for the caller to write, then fsyncs
    it and renames it onto `path`, so that no reader ever sees a partial file; on any error the temporary file is
    removed. Its name is `.NAME.tmp` (`.NAME.PID.tmp` with `unique`: for a file several processes may write at the
    same time, a manifest of shards, a shared cache); a resumed stage deletes the `.*.tmp` a killed run left."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp" if unique else f".{path.name}.tmp")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path, unique=True) as tmp:  # shards may write the same manifest at the same time
        tmp.write_bytes(data)


def write_parquet(path: Path, table: pa.Table) -> None:
    """Write `table` to `path` atomically (`atomic_file`). An I/O error (a full disk) names `path`."""
    try:
        with atomic_file(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
    except OSError as exc:
        if exc.filename is None:  # Arrow's errors carry no file name
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise


_parts_written = 0


def _test_kill_hook() -> None:
    """HARDNEG_TEST_KILL_AFTER_PARTS=N: SIGKILL this process after its N-th part (a test hook, see the module doc)."""
    global _parts_written
    _parts_written += 1
    if os.environ.get("HARDNEG_TEST_KILL_AFTER_PARTS") == str(_parts_written):
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("HARDNEG_TEST_STALL_AFTER_PARTS") == str(_parts_written):
        until = Path(os.environ["HARDNEG_TEST_STALL_UNTIL"])
        end = time.monotonic() + 600
        while not until.exists() and time.monotonic() < end:
            time.sleep(0.05)


def save_table(path: Path, table: pa.Table) -> int:
    """A part as the executors write it (`hardneg.executor.Save`): atomically, then the test kill hook."""
    write_parquet(path, table)
    _test_kill_hook()
    return table.num_rows


def manifest_digest(stage_dir: Path) -> str:
    return hashlib.sha256((Path(stage_dir) / MANIFEST).read_bytes()).hexdigest()


def read_manifest(stage_dir: Path) -> dict:
    path = Path(stage_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise HardnegError(f"{path}: not valid JSON ({exc}); the stage output is damaged: rebuild it with "
                           f"--overwrite") from None
    except UnicodeDecodeError:
        raise HardnegError(f"{path}: not UTF-8 text; the stage output is damaged: rebuild it with --overwrite") from None
    if not isinstance(manifest, dict):
        raise HardnegError(f"{path}: not a hardneg manifest (a JSON object is expected); rebuild it with --overwrite")
    return manifest


# -- file digests and verification -------------------------------------------------------------------------------

def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


_VERIFIED: dict[tuple, str] = {}  # (path, size, mtime_ns, inode) -> sha256, so a file is hashed once per process


def cached_sha256(path: Path) -> str:
    st = os.stat(path)
    key = (str(Path(path).absolute()), st.st_size, st.st_mtime_ns, st.st_ino)
    digest = _VERIFIED.get(key)
    if digest is None:
        digest = _VERIFIED[key] = file_sha256(path)
    return digest


def listed_files(stage_dir: Path) -> dict[str, dict]:
    """Every file of a stage directory but the top-level `_*` (manifest, _SUCCESS, lock, shard markers) and `.*`
    (temporary) entries: {relative path: {"bytes", "sha256"}}."""
    stage_dir = Path(stage_dir)
    out = {}
    for p in sorted(stage_dir.rglob("*")):
        rel = p.relative_to(stage_dir)
        if rel.parts[0].startswith(("_", ".")) or p.name.startswith(".") or not p.is_file():
            continue
        out[rel.as_posix()] = {"bytes": p.stat().st_size, "sha256": cached_sha256(p)}
    return out


def verify_files(stage_dir: Path, manifest: dict, digests: bool = True) -> None:
    """Refuse (one line) a file the manifest lists that is missing, resized or (with `digests`) altered, and a
    `part-*.parquet` it does not list. A manifest without `files` (an older hardneg) is not checked."""
    files = manifest.get("files")
    if files is None:
        return
    stage_dir = Path(stage_dir)
    fix = f"rebuild it: `hardneg {manifest.get('stage')} ... --overwrite` (or `hardneg run --overwrite`)"
    for name, meta in files.items():
        p = stage_dir / name
        try:
            size = p.stat().st_size
        except FileNotFoundError:
            raise HardnegError(f"{p}: missing, but {stage_dir / MANIFEST} lists it; the stage output is damaged, "
                               f"{fix}") from None
        if size != meta["bytes"]:
            raise HardnegError(f"{p}: has {size} bytes, {stage_dir / MANIFEST} says {meta['bytes']} (altered or "
                               f"truncated after the stage finished); {fix}")
        if digests and cached_sha256(p) != meta["sha256"]:
            raise HardnegError(f"{p}: its content differs from the sha256 in {stage_dir / MANIFEST} (altered after "
                               f"the stage finished); {fix}")
    extra = [p for p in sorted(stage_dir.glob("part-*.parquet")) if p.name not in files]
    if extra:
        raise HardnegError(f"{extra[0]}: not listed in {stage_dir / MANIFEST} (copied in after the stage finished?); "
                           f"remove it, or {fix}")


def content_digest(stage_dir: Path, manifest: dict | None = None) -> str:
    """What a finished stage *is*, independent of where it lives: sha256 of its stage, config (an import's without
    the source paths) and its files' sha256. Same content under another path -> same digest. A manifest without
    `files` (an older hardneg) falls back to the sha256 of the manifest's bytes."""
    manifest = read_manifest(stage_dir) if manifest is None else manifest
    if "files" not in manifest:
        return manifest_digest(stage_dir)
    config = manifest.get("config") or {}
    if manifest.get("stage") == "import":
        config = {k: v for k, v in config.items() if k not in ("source", "files")}
    identity = {"stage": manifest.get("stage"), "config": config,
                "files": {name: meta["sha256"] for name, meta in manifest["files"].items()}}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def dataset_digest(stage_dir: Path, manifest: dict | None = None) -> str | None:
    """The content digest of the imported data a finished stage descends from (its own, for an import)."""
    manifest = read_manifest(stage_dir) if manifest is None else manifest
    if manifest.get("stage") == "import":
        return content_digest(stage_dir, manifest)
    return manifest.get("dataset")


def require_finished(stage_dir: Path, stage: str | tuple[str, ...], verify: bool = True) -> dict:
    """Check that `stage_dir` is a finished output of `stage`, with every file its manifest lists (sizes always,
    sha256 once per process, see `verify_files`), and return its manifest."""
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
    except OSError as exc:
        raise HardnegError(f"{stage_dir / MANIFEST}: unreadable manifest ({exc}); rerun the stage with --overwrite")
    if manifest.get("stage") not in stages:
        raise HardnegError(
            f"{stage_dir}: is the output of `{manifest.get('stage')}`, but a {'/'.join(stages)} output is needed here"
        )
    if verify:
        verify_files(stage_dir, manifest)
    return manifest


def input_record(manifest: dict, stage: str | tuple[str, ...]) -> dict | None:
    """The entry of `manifest`'s inputs that is the output of `stage` ({"path", "stage", "digest"}), or None. Inputs
    are found by their stage, never by their position in the list."""
    stages = (stage,) if isinstance(stage, str) else stage
    for inp in manifest.get("inputs", []):
        kind = inp.get("stage")
        if kind is None:  # an input recorded by an older hardneg: ask its own manifest
            try:
                kind = read_manifest(Path(inp["path"])).get("stage")
            except (OSError, HardnegError):
                continue
        if kind in stages:
            return inp
    return None


def input_dir(stage_dir: Path, stage: str | tuple[str, ...], manifest: dict | None = None) -> Path | None:
    """The directory `stage_dir` read as its `stage` input (e.g. "import": the data a `score` read, "index": the
    index a `mine` searched), as its manifest (`manifest`, default: read it) records it; None when it records none
    or that directory is gone."""
    manifest = read_manifest(stage_dir) if manifest is None else manifest
    record = input_record(manifest, stage)
    if record is None or not Path(record["path"]).is_dir():
        return None
    return Path(record["path"])


def part_paths(stage_dir: Path) -> list[Path]:
    """The parts present in a directory (a writer's own output). For a finished input, use `finished_parts`."""
    return sorted(Path(stage_dir).glob("part-*.parquet"))


def finished_parts(stage_dir: Path, stage: str | tuple[str, ...]) -> list[Path]:
    """Exactly the parts a finished stage's manifest lists, after `require_finished` verified them."""
    manifest = require_finished(stage_dir, stage)
    if "files" not in manifest:  # written by an older hardneg: what is there
        return part_paths(stage_dir)
    return [Path(stage_dir) / n for n in sorted(manifest["files"]) if n.startswith("part-") and n.endswith(".parquet")]


def read_part(path: Path, schema: pa.Schema) -> pa.Table:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise HardnegError(f"{path}: not a readable Parquet file ({exc}); rerun the stage that wrote it") from None
    return conform(table, schema, str(path))


def read_stage(stage_dir: Path, stage: str | tuple[str, ...], schema: pa.Schema) -> pa.Table:
    """Read exactly the parts a finished stage directory's manifest lists, verified, as one table with `schema`."""
    parts = [read_part(p, schema) for p in finished_parts(stage_dir, stage)]
    return pa.concat_tables(parts) if parts else schema.empty_table()


# -- inputs are never outputs -----------------------------------------------------------------------------------

def _inside(a: Path, b: Path) -> bool:
    """Whether path `a` is `b` or inside it (symlinks resolved)."""
    a, b = Path(a).resolve(), Path(b).resolve()
    return a == b or b in a.parents


def check_not_input(out: Path, reads: list[Path], may_nest: bool = False) -> None:
    """Refuse an output that is, is inside, or contains a directory or file the same command reads (`may_nest`:
    only one that is or contains it, e.g. an import's --out inside its source folder)."""
    for r in reads:
        if r is None:
            continue
        if (_inside(out, r) and not may_nest) or _inside(r, out):
            raise HardnegError(f"{out}: is {'inside ' if Path(out).resolve() != Path(r).resolve() else ''}{r}, which "
                               f"this command reads; choose an --out outside its inputs (--overwrite would delete "
                               f"or change its own input)")


# -- one writer per directory -----------------------------------------------------------------------------------

def _holder_text(path: Path) -> str:
    try:
        info = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    what = f" (shard {info['shard'][0]}/{info['shard'][1]})" if info.get("shard") else ""
    return f"pid {info.get('pid')}@{info.get('host')}{what}, since {since}"


class DirLock:
    """An flock on `path`, exclusive or shared, non-blocking; its holder's pid and host are written in `info_path`
    while held (emptied on release). The kernel releases it when the process ends, however it ends."""

    def __init__(self, path: Path, shared: bool = False, info_path: Path | None = None, shard=None):
        import fcntl

        self.path = Path(path)
        self.info_path = Path(info_path) if info_path else (None if shared else self.path)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self.fd)
            self.fd = None
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise BlockingIOError(exc.errno, "held") from None
            raise HardnegError(f"{self.path}: cannot lock it ({exc.strerror}); hardneg needs a filesystem with "
                               f"flock (local disks, NFSv4, Lustre and GPFS have it)") from None
        if self.info_path is not None:
            info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                    **({"shard": list(shard)} if shard else {})}
            if self.info_path == self.path:
                os.ftruncate(self.fd, 0)
                os.pwrite(self.fd, json.dumps(info).encode(), 0)
            else:
                self.info_path.write_text(json.dumps(info))

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if self.info_path == self.path:
                os.ftruncate(self.fd, 0)
            elif self.info_path is not None and self.info_path.exists():
                self.info_path.unlink()
        except OSError:
            pass
        os.close(self.fd)  # releases the flock
        self.fd = None


def lock_stage_dir(out: Path, shard: tuple[int, int] = (0, 1)) -> list[DirLock]:
    """Take `out`'s writer lock (exclusive; shared among the shards of a stage, each shard id exclusive), or raise
    a one-line HardnegError naming the holder."""
    out = Path(out)
    i, n = shard
    if n == 1:
        try:
            return [DirLock(out / LOCK)]
        except BlockingIOError:
            leases = [p for p in sorted((out / SHARDS).glob("lease-*-of-*")) if not p.name.endswith(".lock")]
            holder = _holder_text(leases[0]) if leases else _holder_text(out / LOCK)
            raise HardnegError(f"{out}: another hardneg process is writing it ({holder}); wait for it to end, or "
                               f"stop it, then rerun") from None
    try:
        common = DirLock(out / LOCK, shared=True)
    except BlockingIOError:
        raise HardnegError(f"{out}: another hardneg process is writing it ({_holder_text(out / LOCK)}); wait for "
                           f"it to end, or stop it, then rerun the shard") from None
    (out / SHARDS).mkdir(exist_ok=True)
    lease = out / SHARDS / f"lease-{i}-of-{n}"
    try:
        mine = DirLock(Path(f"{lease}.lock"), info_path=lease, shard=shard)
    except BlockingIOError:
        common.release()
        raise HardnegError(f"{out}: shard {i}/{n} is already being written ({_holder_text(lease)}); each shard id "
                           f"runs once at a time") from None
    return [common, mine]


class StageWriter:
    """Writes one stage directory. Use as a context manager; call `finish()` when every part is written.

    Holds the directory's writer lock from `__enter__` to `__exit__` (see `lock_stage_dir`). A `HardnegError` raised
    inside the block removes the directory if this run started it (its input was bad, nothing in it is worth
    resuming); a resumed directory keeps the parts finished before. Any other interruption (Ctrl-C, a kill, a full
    disk) leaves the finished parts for a rerun to resume from. `reads` are the paths the command reads besides
    `inputs` (never written to, never deleted by --overwrite).
    """

    def __init__(self, out: Path, stage: str, config: dict, inputs: list[Path] | None = None, overwrite: bool = False,
                 shard: tuple[int, int] = (0, 1), requeue_ok: bool = True, reads: list[Path] | None = None):
        self.out = Path(out)
        self.stage = stage
        self.config = config
        self.input_dirs = [Path(p) for p in (inputs or [])]
        check_not_input(self.out, [*self.input_dirs, *(reads or [])], may_nest=stage == "import")
        manifests = [read_manifest(p) for p in self.input_dirs]
        self.inputs = [{"path": str(p), "stage": m.get("stage"), "digest": content_digest(p, m)}
                       for p, m in zip(self.input_dirs, manifests)]
        self.dataset = self._dataset(manifests)
        self.overwrite = overwrite
        self.started = time.time()
        self.parts: dict[str, int] = {}
        self.resumed = False
        self.shard = shard
        self.shard_stats: dict = {}
        self.unit_stats: dict[str, dict] = {}  # a unit's statistics, by file name, as its worker returned them
        self.requeue_ok = requeue_ok  # a shard of an already finished, identical stage is a no-op (AlreadyFinished)
        self.locks: list[DirLock] = []
        self.created = False

    def _dataset(self, manifests: list[dict]) -> str | None:
        """The dataset every input descends from; inputs from different datasets are refused."""
        seen: dict[str, Path] = {}
        for p, m in zip(self.input_dirs, manifests):
            d = dataset_digest(p, m)
            if d is not None:
                seen.setdefault(d, p)
        if len(seen) > 1:
            (d1, p1), (d2, p2) = list(seen.items())[:2]
            data = p1 if read_manifest(p1).get("stage") == "import" else p2
            other = p2 if data == p1 else p1
            raise HardnegError(f"{data}: is not the dataset {other} was built from (their contents differ); pass "
                               f"the same --data that built {other}, or rebuild it from this one")
        return next(iter(seen), None)

    # -- lifecycle -------------------------------------------------------------------------------------------
    def __enter__(self) -> "StageWriter":
        out = self.out
        sharded = self.shard[1] > 1
        if out.exists() and not out.is_dir():
            raise HardnegError(f"{out}: exists and is not a directory; choose another --out")
        if sharded and self.overwrite:
            raise HardnegError(f"{out}: --overwrite with --shard would delete the other shards' parts; empty the "
                               f"directory once before starting the shards, without --overwrite")
        if out.exists() and not (out / MANIFEST).exists() and self._foreign_files():
            if self.overwrite:
                raise HardnegError(f"{out}: not a hardneg output directory; refusing to delete it, choose another --out")
            raise HardnegError(f"{out}: exists and is not empty; choose another --out or empty it")
        try:
            try:
                out.mkdir(parents=True)
                self.created = True
            except FileExistsError:
                pass
            # never delete anything when the lock is refused: the directory is the holder's
            self.locks = lock_stage_dir(out, self.shard)
        except OSError as exc:
            raise HardnegError(f"{out}: cannot write the output directory ({exc.strerror}); choose another --out")
        try:
            self._start()
        except BaseException:
            if self.created and self.shard[1] == 1:
                self._remove_own_dir()
            self._release()
            raise
        return self

    def _foreign_files(self) -> bool:
        """Whether the directory holds anything but a lock, shard markers and temporary files."""
        return any(p for p in self.out.iterdir() if p.name not in (LOCK, SHARDS) and not p.name.startswith("."))

    def _remove_own_dir(self) -> None:
        """Delete the output directory this writer started, under its lock: its files first, then the lock file
        (still held, so no other writer can be inside), then the directory if nobody has created anything since."""
        for p in list(self.out.iterdir()):
            if p.name != LOCK:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        try:
            (self.out / LOCK).unlink(missing_ok=True)
            self.out.rmdir()
        except OSError:
            pass

    def _start(self) -> None:
        """Under the lock: clear (--overwrite), refuse, or resume."""
        out = self.out
        sharded = self.shard[1] > 1
        if self.overwrite:
            for p in out.iterdir():
                if p.name == LOCK:
                    continue
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
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
                for tmp in out.rglob(".*.tmp"):
                    tmp.unlink()
        elif self._foreign_files():
            raise HardnegError(f"{out}: exists and is not empty; choose another --out or empty it")
        try:
            self._write_manifest(status="running")
        except OSError as exc:
            raise HardnegError(f"{out}: cannot write the output directory ({exc.strerror}); choose another --out")

    def _release(self) -> None:
        for lock in reversed(self.locks):
            lock.release()
        self.locks = []

    def _same_run(self, manifest: dict) -> bool:
        """Same stage, config and inputs (by content: the inputs' paths do not matter)."""
        old = [i.get("digest", i.get("manifest_sha256")) for i in manifest.get("inputs", [])]
        return (manifest.get("stage"), manifest.get("config"), old) == (
            self.stage, self.config, [i["digest"] for i in self.inputs])

    def __exit__(self, exc_type, exc, tb) -> bool:
        bad_input = (exc_type is not None and issubclass(exc_type, HardnegError) and not self.resumed
                     and self.shard[1] == 1 and not (self.out / SUCCESS).exists())
        try:
            if bad_input and self.out.is_dir():
                self._remove_own_dir()
        finally:
            self._release()
        return False

    # -- parts -----------------------------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        """True when the file `name` was already written (by this run or a killed earlier one)."""
        return (self.out / name).exists()

    def path(self, name: str) -> Path:
        return self.out / name

    def write_table(self, name: str, table: pa.Table) -> None:
        self.record(name, save_table(self.out / name, table))

    def record(self, name: str, rows: int, stats: dict | None = None) -> None:
        """Note a part written (by this process or by an executor's worker), with its unit's statistics."""
        self.parts[name] = rows
        if stats is not None:
            self.unit_stats[name] = stats

    def unit_totals(self, names: list[str], recount: Callable[[Path], dict]) -> dict:
        """The statistics of the units `names`, added up (`hardneg.executor.add_stats`): each as its worker returned
        it, to this process or to another shard (whose marker holds it); only a unit that an earlier, killed run
        wrote has its statistics recounted from its file (`recount(path)`). So a summary made from them re-reads
        none of the parts this run computed."""
        total: dict = {}
        for name in names:
            stats = self.unit_stats.get(name)
            add_stats(total, stats if stats is not None else recount(self.out / name))
        return total

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
                           json.dumps({"shard": [i, n], "parts": sorted(self.parts), "stats": stats or {},
                                       "units": self.unit_stats}).encode())
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
            marker = json.loads(m.read_text())
            add_stats(self.shard_stats, marker.get("stats", {}))
            for name, unit in marker.get("units", {}).items():
                self.unit_stats.setdefault(name, unit)
        return True

    def shard_pending(self) -> dict:
        """What a shard that does not finish the stage returns in place of the manifest."""
        i, n = self.shard
        done = len(list((self.out / SHARDS).glob(f"shard-*-of-{n}.json")))
        return {"stage": self.stage, "status": "shard-done", "shard": [i, n], "shards_done": done,
                "parts": dict(sorted(self.parts.items()))}

    def write_json(self, name: str, obj) -> None:
        atomic_write_bytes(self.out / name, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())

    def finish(self, summary: dict | None = None, models: dict | None = None, **extra) -> dict:
        """Write the finished manifest (with every file's size and sha256, see `listed_files`), then `_SUCCESS`."""
        for p in part_paths(self.out):
            if p.name not in self.parts:  # written by an earlier, interrupted run, or by another shard
                self.parts[p.name] = pq.ParquetFile(p).metadata.num_rows
        manifest = self._write_manifest(status="finished", summary=summary or {}, models=models or {},
                                        files=listed_files(self.out), **extra)
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
            **({"dataset": self.dataset} if self.dataset else {}),
            **extra,
        }
        if status == "finished":
            manifest["parts"] = dict(sorted(self.parts.items()))
            manifest["wall_seconds"] = round(time.time() - self.started, 3)
            # the process's peak resident memory so far (under `hardneg run`, earlier stages' too: the stage whose
            # figure is higher than the one before it raised the peak); Ray workers are other processes
            manifest["process_peak_rss_mib"] = peak_rss_mib()
        self.write_json(MANIFEST, manifest)
        return manifest
