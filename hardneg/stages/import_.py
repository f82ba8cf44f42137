"""`import`: read a BEIR / JSONL / TSV / Parquet source and write validated corpus, queries and qrels Parquet."""

from __future__ import annotations

from pathlib import Path

from hardneg.config import ImportConfig, asdict
from hardneg.io import data, readers
from hardneg.io.stagedir import StageWriter, file_sha256


def source_fingerprints(files: dict[str, Path]) -> dict[str, dict]:
    """Size, mtime and sha256 of each source file (a directory: of its files, sha256 over their names and digests),
    recorded in the data manifest so that `hardneg run` notices a source edited in place."""
    out = {}
    for kind, path in files.items():
        path = Path(path)
        members = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        stats = [p.stat() for p in members]
        if path.is_dir():
            import hashlib

            h = hashlib.sha256()
            for p in members:
                h.update(f"{p.relative_to(path).as_posix()}\0{file_sha256(p)}\n".encode())
            digest = h.hexdigest()
        else:
            digest = file_sha256(path)
        out[kind] = {"path": str(path.resolve()), "bytes": sum(s.st_size for s in stats),
                     "mtime_ns": max((s.st_mtime_ns for s in stats), default=0), "sha256": digest}
    return out


def source_changed(src: Path, cfg: ImportConfig, manifest: dict) -> str | None:
    """Why a finished import of `src` is no longer current (another split, a source file added, removed or with
    other content), or None. A file with its recorded size and mtime is taken as unchanged; otherwise its sha256
    decides (a touched but unchanged file is still current). The source's path does not matter."""
    old = manifest.get("config", {})
    if old.get("split") != cfg.split:
        return f"the data was imported with split {old.get('split')!r}, not {cfg.split!r}"
    recorded = manifest.get("sources")
    files = readers.find_files(Path(src), cfg.split)
    if recorded is None:  # an import by an older hardneg: by paths
        return None if old == resolved_config(src, cfg) else f"{src}: other source files than the import's"
    if sorted(recorded) != sorted(files):
        return f"{src}: has other kinds of source files ({', '.join(sorted(files))}) than were imported"
    for kind, path in files.items():
        rec = recorded[kind]
        path = Path(path)
        if path.is_file():
            st = path.stat()
            if st.st_size == rec["bytes"] and st.st_mtime_ns == rec["mtime_ns"]:
                continue
        if source_fingerprints({kind: path})[kind]["sha256"] != rec["sha256"]:
            return f"{path}: changed since it was imported (its content differs)"
    return None


def resolved_config(src: Path, cfg: ImportConfig) -> dict:
    files = readers.find_files(Path(src), cfg.split)
    return {**asdict(cfg), "source": str(Path(src).resolve()), "files": {k: str(v.resolve()) for k, v in files.items()}}


def run(src: Path, out: Path, cfg: ImportConfig, overwrite: bool = False) -> dict:
    config = resolved_config(src, cfg)
    files = {kind: Path(p) for kind, p in config["files"].items()}
    tables = {kind: readers.read_table(path, kind) for kind, path in files.items()}
    tables, counts = data.validate(tables, files)
    with StageWriter(out, "import", config, overwrite=overwrite, reads=[Path(src)]) as w:
        for name, table in tables.items():
            w.write_table(f"{name}.parquet", table)
        return w.finish(summary=counts, sources=source_fingerprints(files))
