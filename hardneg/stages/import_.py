"""`import`: read a BEIR / JSONL / TSV / Parquet source and write validated corpus, queries and qrels Parquet."""

from __future__ import annotations

from pathlib import Path

from hardneg.config import ImportConfig, asdict
from hardneg.io import data, readers
from hardneg.io.stagedir import StageWriter


def resolved_config(src: Path, cfg: ImportConfig) -> dict:
    files = readers.find_files(Path(src), cfg.split)
    return {**asdict(cfg), "source": str(Path(src).resolve()), "files": {k: str(v.resolve()) for k, v in files.items()}}


def run(src: Path, out: Path, cfg: ImportConfig, overwrite: bool = False) -> dict:
    config = resolved_config(src, cfg)
    files = {kind: Path(p) for kind, p in config["files"].items()}
    tables = {kind: readers.read_table(path, kind) for kind, path in files.items()}
    tables, counts = data.validate(tables, files)
    with StageWriter(out, "import", config, overwrite=overwrite) as w:
        for name, table in tables.items():
            w.write_table(f"{name}.parquet", table)
        return w.finish(summary=counts)
