"""`hardneg run` cold, side by side in one run: today's scoring (the code before issue 16, taken from git) against
the new path (the teacher reads the index's embeddings or its embedding cache; adaptive depth where it applies).

    python bench/score_depth.py --data /work/shared/data/nfcorpus --config configs/default.toml \\
        --baseline-rev a6224b6 --work /tmp/hn-depth [--queries 0] [--name default]

Each variant is one cold `hardneg run` (a fresh run directory, no cache) in its own process; wall per stage comes
from the stage manifests, peak RSS is that process's own ru_maxrss. The baseline is `git archive --baseline-rev`
unpacked into --work and run with the same interpreter. `--variant NAME=SCORE_TOML_LINES` adds a variant of the new
code with extra [score] keys (e.g. `full=depth = "full"`). `--queries N` keeps the first N test queries (a slice:
the full corpus, fewer queries). Exports are compared byte for byte. Results go to bench/results/score_depth-NAME.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from benchutil import fresh_workdir, timed  # noqa: E402
from score_speed import small_beir  # noqa: E402

STAGES = ["import", "index", "mine", "score", "filter", "relabel", "export"]
DIRS = {"import": "data", "index": "index", "mine": "mined", "score": "scored", "filter": "filtered",
        "relabel": "relabeled"}


def with_score_keys(config: Path, extra: str, dst: Path) -> Path:
    """`config` with `extra` TOML lines appended to its [score] table."""
    text = config.read_text()
    if extra:
        tomllib.loads(text)  # valid before
        lines, out, in_score = text.splitlines(), [], False
        for line in lines:
            if line.strip().startswith("[") and in_score:
                out.append(extra)
                in_score = False
            out.append(line)
            if line.strip() == "[score]":
                in_score = True
        if in_score:
            out.append(extra)
        text = "\n".join(out) + "\n"
    dst.write_text(text)
    tomllib.loads(text)
    return dst


def stage_walls(run_dir: Path) -> dict:
    out = {}
    for stage in STAGES:
        path = (run_dir / DIRS[stage] / "_manifest.json" if stage in DIRS
                else next(run_dir.glob("train.*.manifest.json"), None))
        if path is not None and path.exists():
            m = json.loads(path.read_text())
            out[stage] = round(m.get("wall_seconds", 0.0), 2)
    return out


def score_summary(run_dir: Path) -> dict:
    s = json.loads((run_dir / "scored" / "_manifest.json").read_text())["summary"]
    keys = ("distinct_pairs", "scored_pairs", "cached_pairs", "pairs_skipped_by_depth", "texts_encoded",
            "embeddings_reused", "embeddings_from_index", "depth")
    return {k: s[k] for k in keys if k in s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "default.toml")
    ap.add_argument("--baseline-rev", default="a6224b6", help="git revision of today's code ('' to skip)")
    ap.add_argument("--variant", action="append", default=[], help="NAME=extra [score] TOML lines (new code)")
    ap.add_argument("--queries", type=int, default=0, help="keep the first N test queries (0 = all)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--name", default="default")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    work = fresh_workdir(args.work, "hn-depth-")
    log = work / "log.txt"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    src = args.data
    if args.queries:
        src = work / "src"
        small_beir(args.data, src, args.queries, args.split)
    variants = []  # (name, code dir, config)
    if args.baseline_rev:
        base = work / "baseline-code"
        base.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline_rev], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        variants.append(("today", base, with_score_keys(args.config, "", work / "today.toml")))
    variants.append(("new", ROOT, with_score_keys(args.config, "", work / "new.toml")))
    for v in args.variant:
        name, extra = v.split("=", 1)
        variants.append((name, ROOT, with_score_keys(args.config, extra, work / f"{name}.toml")))

    results = []
    for name, code, config in variants:
        run_dir = work / f"run-{name}"
        cmd = [sys.executable, "-m", "hardneg", "run", str(src), "--out", str(run_dir), "--config", str(config)]
        print(f"[{name}] {' '.join(cmd)}", flush=True)
        with open(log, "a") as fh:
            fh.write(f"# variant {name}: PYTHONPATH={code}\n")
        os.environ["PYTHONPATH"] = str(code)
        proc = timed(cmd, log)
        train = next(p for p in run_dir.glob("train.*") if not p.name.endswith(".manifest.json"))
        row = {"variant": name, "code": "git " + args.baseline_rev if code != ROOT else "this tree",
               "config": config.read_text(), **proc, "stage_wall_s": stage_walls(run_dir),
               "score": score_summary(run_dir),
               "train_sha256": hashlib.sha256(train.read_bytes()).hexdigest(), "train_file": train.name}
        results.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "config"}), flush=True)
    ref = results[0]["train_sha256"]
    for row in results:
        row["export_identical_to_first"] = row["train_sha256"] == ref
    out = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "data": str(args.data),
           "queries": args.queries or "all", "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                         "load_avg_at_end": os.getloadavg()},
           "results": results}
    dst = args.json or HERE / "results" / f"score_depth-{args.name}.json"
    dst.write_text(json.dumps(out, indent=2) + "\n")
    print(table(results))
    print(f"wrote {dst}")


def table(results: list[dict]) -> str:
    head = ("| variant | index s | mine s | score s | other s | whole run s | peak RSS MiB | pairs scored | "
            "skipped by depth | texts encoded | embeddings reused | export identical |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in results:
        w, s = r["stage_wall_s"], r["score"]
        other = sum(v for k, v in w.items() if k not in ("index", "mine", "score"))
        lines.append(f"| {r['variant']} | {w.get('index', '-')} | {w.get('mine', '-')} | {w.get('score', '-')} | "
                     f"{other:.1f} | {r['wall_s']} | {r['peak_rss_mib']} | {s.get('scored_pairs', '-')} | "
                     f"{s.get('pairs_skipped_by_depth', '-')} | {s.get('texts_encoded', '-')} | "
                     f"{s.get('embeddings_reused', '-')} | {'yes' if r['export_identical_to_first'] else 'NO'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
