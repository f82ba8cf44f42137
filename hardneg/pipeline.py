"""`hardneg run`: every stage from one config file, into one run directory, like `make` over stage directories.

A stage whose finished output has the same resolved config and inputs is skipped; an unfinished one resumes; a
finished one whose config or inputs changed is rebuilt only with `overwrite=True`, and so is everything after it.
"""

from __future__ import annotations

import json
from pathlib import Path

from hardneg.config import PipelineConfig, asdict
from hardneg.errors import HardnegError
from hardneg.executor import LOCAL, Execution
from hardneg.io.stagedir import MANIFEST, SUCCESS, manifest_digest, read_manifest
from hardneg.stages import export, filter, import_, index, judge, mine, relabel, score

LAYOUT = {"import": "data", "index": "index", "mine": "mined", "score": "scored", "filter": "filtered",
          "judge": "judged", "relabel": "relabeled"}


def _state(out: Path, config: dict, inputs: list[Path], manifest_path: Path) -> str:
    """'missing', 'current' (finished, same config and inputs) or 'stale'."""
    if not manifest_path.exists() or (out.is_dir() and not (out / SUCCESS).exists()):
        return "missing"
    old = json.loads(manifest_path.read_text())
    digests = [{"path": str(p), "manifest_sha256": manifest_digest(p)} for p in inputs]
    return "current" if old.get("config") == config and old.get("inputs") == digests else "stale"


def run(src: Path, out: Path, cfg: PipelineConfig, overwrite: bool = False, log=print,
        execution: Execution = LOCAL) -> dict[str, Path]:
    """`execution` (its executor; never a shard) runs the units of index, mine and score."""
    out = Path(out)
    src = Path(src)
    paths = {stage: out / name for stage, name in LAYOUT.items()}
    fmt_ext = ".jsonl" if cfg.export.format == "flagembedding" else ".parquet"
    paths["export"] = out / f"train{fmt_ext}"
    if (src / SUCCESS).exists() and read_manifest(src).get("stage") == "import":
        paths["import"] = src
    else:
        out.mkdir(parents=True, exist_ok=True)
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
        ("filter", lambda o, ow: filter.run(paths["score"], o, cfg.filter, ow), cfg.filter, [paths["score"]]),
        # with a [judge] section, the LLM judges read the filter's suspects and relabel reads their verdicts
        *([("judge", lambda o, ow: judge.run(paths["filter"], data, o, cfg.judge, ow, log=log), cfg.judge,
            [paths["filter"], data])] if cfg.judge is not None else []),
        ("relabel", lambda o, ow: relabel.run(labels_in, o, cfg.relabel, ow), cfg.relabel, [labels_in]),
        ("export", lambda o, ow: export.run(paths["relabel"], data, o, cfg.export, ow), cfg.export,
         [paths["relabel"], data]),
    ]
    for stage, fn, stage_cfg, inputs in steps:
        target = paths[stage]
        if stage == "import" and target == src:
            log(f"[import] using the imported data in {src}")
            continue
        manifest_path = Path(f"{target}.manifest.json") if stage == "export" else target / MANIFEST
        config = (import_.resolved_config(src, stage_cfg) if stage == "import"
                  else stage_cfg() if callable(stage_cfg) else asdict(stage_cfg))
        state = _state(target, config, inputs, manifest_path)
        if state == "current":
            log(f"[{stage}] up to date: {target}")
            continue
        if state == "stale" and not overwrite:
            raise HardnegError(
                f"{target}: was built with another config or input; pass --overwrite to rebuild it and what follows"
            )
        log(f"[{stage}] -> {target}")
        # a training file without its manifest is one a killed export was writing: replace it
        fn(target, state == "stale" or (stage == "export" and target.exists()))
    return paths
