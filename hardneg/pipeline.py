"""`hardneg run`: every stage from one config file, into one run directory, like `make` over stage directories.

A stage whose finished output has the same resolved config and inputs (by content) and whose files are intact (the
sizes and sha256 its manifest lists; the training file's too) is skipped; an unfinished one resumes; a finished one
whose config, inputs or source files changed, or whose files were altered, is rebuilt only with `overwrite=True`,
and so is everything after it. The import notices an edited source by its size and mtime, then its sha256.
"""

from __future__ import annotations

import json
from pathlib import Path

from hardneg.config import PipelineConfig, asdict
from hardneg.errors import HardnegError
from hardneg.executor import LOCAL, Execution
from hardneg.io.stagedir import MANIFEST, SUCCESS, content_digest, file_sha256, read_manifest, verify_files
from hardneg.stages import export, filter, import_, index, judge, mine, relabel, score

LAYOUT = {"import": "data", "index": "index", "mine": "mined", "score": "scored", "filter": "filtered",
          "judge": "judged", "relabel": "relabeled"}


def _state(out: Path, config: dict, inputs: list[Path], manifest_path: Path, changed=None) -> tuple[str, str]:
    """('missing' | 'current' | 'stale', why): current = finished, same config, same inputs by content, files
    intact. `changed(manifest)` (import) names a source file that changed, or returns None."""
    if not manifest_path.exists() or (out.is_dir() and not (out / SUCCESS).exists()):
        return "missing", ""
    try:
        old = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return "stale", f"{manifest_path}: not valid JSON ({exc})"
    if changed is not None:
        why = changed(old)
        if why:
            return "stale", why
    elif old.get("config") != config:
        return "stale", f"{out}: was built with another config"
    elif [i.get("digest") for i in old.get("inputs", [])] != [content_digest(p) for p in inputs]:
        return "stale", f"{out}: was built from other input content"
    try:
        if out.is_dir():
            verify_files(out, old)
        else:
            rec = old.get("file")
            if rec is None or not out.exists() or out.stat().st_size != rec["bytes"] or file_sha256(out) != rec["sha256"]:
                return "stale", f"{out}: missing, truncated or altered since its manifest was written"
    except HardnegError as exc:
        return "stale", str(exc)
    return "current", ""


def run(src: Path, out: Path, cfg: PipelineConfig, overwrite: bool = False, log=print,
        execution: Execution = LOCAL) -> dict[str, Path]:
    """`execution` (its executor; never a shard) runs the units of index, mine, score, filter and relabel."""
    out = Path(out)
    src = Path(src)
    paths = {stage: out / name for stage, name in LAYOUT.items()}
    fmt_ext = ".jsonl" if cfg.export.format == "flagembedding" else ".parquet"
    paths["export"] = out / f"train{fmt_ext}"
    created = not out.exists()
    if (src / SUCCESS).exists() and read_manifest(src).get("stage") == "import":
        paths["import"] = src
    else:
        out.mkdir(parents=True, exist_ok=True)
    try:
        return _run(src, out, cfg, overwrite, log, execution, paths)
    except HardnegError:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a run that failed before writing anything leaves no empty --out behind
        raise


def _run(src: Path, out: Path, cfg: PipelineConfig, overwrite: bool, log, execution: Execution,
         paths: dict[str, Path]) -> dict[str, Path]:
    data = paths["import"]
    labels_in = paths["judge"] if cfg.judge is not None else paths["filter"]

    steps = [
        ("import", lambda o, ow: import_.run(src, o, cfg.import_, ow), cfg.import_, []),
        ("index", lambda o, ow: index.run(data, o, cfg.index, ow, execution), cfg.index, [data]),
        ("mine", lambda o, ow: mine.run(paths["index"], data, o, cfg.mine, ow, execution), cfg.mine,
         [paths["index"], data]),
        # with adaptive depth, score stops each query once the filter's rules leave its negatives
        ("score", lambda o, ow: score.run(paths["mine"], data, o, cfg.score, ow, execution=execution,
                                              run_dir=out, filter_cfg=cfg.filter, relabel_cfg=cfg.relabel),
         lambda: score.recorded_config(cfg.score, cfg.filter, cfg.relabel, paths["mine"], data),
         [paths["mine"], data]),
        ("filter", lambda o, ow: filter.run(paths["score"], o, cfg.filter, ow, execution=execution), cfg.filter,
         [paths["score"]]),
        # with a [judge] section, the LLM judges read the filter's suspects and relabel reads their verdicts
        *([("judge", lambda o, ow: judge.run(paths["filter"], data, o, cfg.judge, ow, log=log, run_dir=out), cfg.judge,
            [paths["filter"], data])] if cfg.judge is not None else []),
        ("relabel", lambda o, ow: relabel.run(labels_in, o, cfg.relabel, ow, execution), cfg.relabel, [labels_in]),
        ("export", lambda o, ow: export.run(paths["relabel"], data, o, cfg.export, ow), cfg.export,
         [paths["relabel"], data]),
    ]
    for stage, fn, stage_cfg, inputs in steps:
        target = paths[stage]
        if stage == "import" and target == src:
            log(f"[import] using the imported data in {src}")
            continue
        manifest_path = Path(f"{target}.manifest.json") if stage == "export" else target / MANIFEST
        config = (None if stage == "import" else stage_cfg() if callable(stage_cfg) else asdict(stage_cfg))
        changed = (lambda m: import_.source_changed(src, cfg.import_, m)) if stage == "import" else None
        state, why = _state(target, config, inputs, manifest_path, changed)
        if state == "current":
            log(f"[{stage}] up to date: {target}")
            continue
        if state == "stale" and not overwrite:
            raise HardnegError(f"{why}; pass --overwrite to rebuild it and what follows")
        if state == "stale":
            log(f"[{stage}] rebuilding: {why}")
        log(f"[{stage}] -> {target}")
        # a training file without its manifest is one a killed export was writing: replace it
        fn(target, state == "stale" or (stage == "export" and target.exists()))
    return paths
