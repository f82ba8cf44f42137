"""`hardneg run` cold, side by side in one run: today's scoring (the code before issue 16, taken from git) against
the new path (the teacher reads the index's embeddings or its embedding cache; adaptive depth where it applies).

    python bench/score_depth.py --data /work/shared/data/nfcorpus --config configs/default.toml \\
        --baseline-rev a6224b6 --work /tmp/hn-depth [--queries 0] [--name default]

Each variant is one cold `hardneg run` (a fresh run directory, no cache) in its own process; wall per stage comes
from the stage manifests, peak RSS is that process's own ru_maxrss. The baseline is `git archive --baseline-rev`
unpacked into --work and run with the same interpreter. `--variant 'NAME=score.depth="full"'` adds a variant of the
new code with config overrides (`section.key=value;...`, TOML values). `--queries N` keeps the first N test queries (a slice:
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
from benchutil import fresh_workdir, read_beir_pairs, timed  # noqa: E402
from score_speed import small_beir  # noqa: E402

from hardneg.config import parse_override, toml_value  # noqa: E402

STAGES = ["import", "index", "mine", "score", "filter", "relabel", "export"]
DIRS = {"import": "data", "index": "index", "mine": "mined", "score": "scored", "filter": "filtered",
        "relabel": "relabeled"}


def with_overrides(config: Path, overrides: str, dst: Path) -> Path:
    """`config` with `section.key=value` overrides (`;`-separated, read as `hardneg run --set` reads them, but not
    checked against this tree's config: a baseline tree may have other keys) written to `dst`."""
    data = tomllib.loads(config.read_text())
    for item in filter(None, (x.strip() for x in overrides.split(";"))):
        section, key, value = parse_override(item)
        data.setdefault(section, {})[key] = value
    text = "".join(f"[{section}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in table.items()) + "\n"
                   for section, table in data.items())
    dst.write_text(text)
    return dst


def stage_walls(run_dir: Path, key: str = "wall_seconds") -> dict:
    """Each stage's `key` from its manifest (wall_seconds; process_peak_rss_mib: the `hardneg run` process's peak
    RSS at the end of that stage, so a stage whose figure is above the one before raised the peak)."""
    out = {}
    for stage in STAGES:
        path = (run_dir / DIRS[stage] / "_manifest.json" if stage in DIRS
                else next(run_dir.glob("train.*.manifest.json"), None))
        if path is not None and path.exists():
            value = json.loads(path.read_text()).get(key)
            if value is not None:
                out[stage] = round(value, 2)
    return out


def score_summary(run_dir: Path) -> dict:
    s = json.loads((run_dir / "scored" / "_manifest.json").read_text())["summary"]
    keys = ("distinct_pairs", "scored_pairs", "cached_pairs", "pairs_skipped_by_depth", "texts_encoded",
            "embeddings_reused", "embeddings_from_index", "depth")
    return {k: s[k] for k in keys if k in s}


def slice_corpus(src: Path, n_docs: int) -> None:
    """Replace the corpus of the BEIR directory `src` (as `small_beir` wrote it) by its first `n_docs` documents
    plus every document its qrels name, so that each query keeps its positives."""
    import gzip

    wanted = {line.split("\t")[1] for line in (src / "qrels").glob("*.tsv").__next__().read_text().splitlines()[1:]}
    corpus = next(p for p in src.iterdir() if p.name.startswith("corpus.jsonl"))
    opener = gzip.open if corpus.name.endswith(".gz") else open
    kept = []
    with opener(corpus, "rt") as fh:
        for i, line in enumerate(fh):
            if i < n_docs or json.loads(line)["_id"] in wanted:
                kept.append(line)
    corpus.unlink()
    (src / "corpus.jsonl").write_text("".join(kept))


def train_tiny_cross_encoder(dst: Path) -> Path:
    """The cross-encoder the tests train (tests/conftest.py::trained_cross_encoder): the packaged MiniLM backbone
    with a fresh head, 80 seeded steps on the tiny collection's (query, positive) vs clear-negative pairs, its top
    layer and head at 64 tokens (before 2026-11-30 the whole model at 128 tokens). A real but weak teacher: for
    counting pairs and timing, not for quality claims."""
    if (dst / "config.json").exists():
        return dst
    sys.path.insert(0, str(ROOT / "tests"))
    import conftest  # noqa: E402  (its fixture function, called directly)

    trained = conftest.trained_cross_encoder.__wrapped__(type("F", (), {"mktemp": lambda self, name: dst.parent})())
    trained.rename(dst)
    return dst


def train_cross_encoder(dst: Path, data: Path, steps: int, split: str = "train") -> Path:
    """The tests' cross-encoder recipe (tests/conftest.py::train_cross_encoder) for `steps` steps on `data`'s
    `split`, the whole model at 128 tokens: batches of 4 (query, labeled positive) and 4 (query, random document)
    pairs, seed 0. The tiny collection's model scores every NFCorpus pair about the same (-3.8 +- 0.01), so no
    candidate falls 5% below a positive and every query stays short whatever the depth; trained on NFCorpus's train
    split it is a teacher whose scores the filter can act on (the benchmark runs the test split)."""
    if (dst / "config.json").exists():
        return dst
    import random

    sys.path.insert(0, str(ROOT / "tests"))
    import conftest  # noqa: E402

    corpus, queries, pairs = read_beir_pairs(data, split)
    rng = random.Random(0)
    ids = sorted(corpus)

    def batch() -> list[tuple[str, str, float]]:
        pos = [(queries[q], corpus[d], 1.0) for q, d in rng.sample(pairs, 4)]
        return pos + [(queries[q], corpus[rng.choice(ids)], 0.0) for q, _ in rng.sample(pairs, 4)]

    tmp = dst.with_name(dst.name + ".tmp")
    conftest.train_cross_encoder(batch, steps, tmp)
    tmp.rename(dst)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "default.toml")
    ap.add_argument("--baseline-rev", default="a6224b6", help="git revision of today's code ('' to skip)")
    ap.add_argument("--overrides", default="", help="section.key=value;... applied to --config for every variant")
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME=section.key=value;... : one more variant of the new code, with these overrides")
    ap.add_argument("--no-new", action="store_true", help="no plain 'new' variant (only --variant ones)")
    ap.add_argument("--queries", type=int, default=0, help="keep the first N test queries (0 = all)")
    ap.add_argument("--docs", type=int, default=0,
                    help="keep the first N documents (plus the kept queries' qrels documents; 0 = all)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--name", default="default")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--train-cross-encoder", type=Path, default=None,
                    help="train the tests' tiny cross-encoder into this folder first (use it in --config by path)")
    ap.add_argument("--train-cross-encoder-on", type=Path, default=None, metavar="BEIR_DIR",
                    help="with --train-cross-encoder: the same recipe on this BEIR directory's train split")
    ap.add_argument("--cross-encoder-steps", type=int, default=400)
    args = ap.parse_args()
    if args.train_cross_encoder and args.train_cross_encoder_on:
        ce = train_cross_encoder(args.train_cross_encoder.absolute(), args.train_cross_encoder_on,
                                 args.cross_encoder_steps)
        print(f"cross-encoder: {ce}", flush=True)
    elif args.train_cross_encoder:
        print(f"cross-encoder: {train_tiny_cross_encoder(args.train_cross_encoder.absolute())}", flush=True)
    work = fresh_workdir(args.work, "hn-depth-").absolute()
    log = work / "log.txt"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    src = args.data = args.data.absolute()
    if args.queries or args.docs:
        src = work / "src"
        small_beir(args.data, src, args.queries or 10**9, args.split)
        if args.docs:
            slice_corpus(src, args.docs)
    variants = []  # (name, code dir, config)
    if args.baseline_rev:
        base = work / "baseline-code"
        base.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline_rev], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        variants.append(("today", base, with_overrides(args.config, args.overrides, work / "today.toml")))
    if not args.no_new:
        variants.append(("new", ROOT, with_overrides(args.config, args.overrides, work / "new.toml")))
    for v in args.variant:
        name, extra = v.split("=", 1)
        variants.append((name, ROOT, with_overrides(args.config, f"{args.overrides};{extra}", work / f"{name}.toml")))

    results = []
    for name, code, config in variants:
        run_dir = work / f"run-{name}"
        cmd = [sys.executable, "-m", "hardneg", "run", str(src), "--out", str(run_dir), "--config", str(config)]
        print(f"[{name}] {' '.join(cmd)}", flush=True)
        # run in `work`, so that `python -m hardneg` imports the code on PYTHONPATH, not the current directory's
        proc = timed(cmd, log, work, {**env, "PYTHONPATH": str(code)})
        train = next(p for p in run_dir.glob("train.*") if not p.name.endswith(".manifest.json"))
        row = {"variant": name, "code": "git " + args.baseline_rev if code != ROOT else "this tree",
               "config": config.read_text(), **proc, "stage_wall_s": stage_walls(run_dir),
               "stage_peak_rss_mib": stage_walls(run_dir, "process_peak_rss_mib"),
               "score": score_summary(run_dir),
               "train_sha256": hashlib.sha256(train.read_bytes()).hexdigest(), "train_file": train.name}
        results.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "config"}), flush=True)
    ref = results[0]["train_sha256"]
    for row in results:
        row["export_identical_to_first"] = row["train_sha256"] == ref
        if row["code"] == "this tree" and results[0]["code"] != "this tree":
            # the code before issue 14 paired every positive with every negative; export the same relabeled table
            # that way (`export --pairing all`) to compare the stages before export byte for byte
            run_dir = work / f"run-{row['variant']}"
            dst = work / f"{row['variant']}-pairing-all.parquet"
            subprocess.run([sys.executable, "-m", "hardneg", "export", str(run_dir / "relabeled"), "--data",
                            str(run_dir / "data"), "--out", str(dst), "--pairing", "all", "--overwrite"],
                           cwd=work, env={**env, "PYTHONPATH": str(ROOT)}, check=True, capture_output=True)
            row["train_sha256_pairing_all"] = hashlib.sha256(dst.read_bytes()).hexdigest()
            row["export_identical_to_first_pairing_all"] = row["train_sha256_pairing_all"] == ref
    out = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "data": str(args.data),
           "queries": args.queries or "all", "docs": args.docs or "all", "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                         "load_avg_at_end": os.getloadavg()},
           "results": results}
    dst = args.json or HERE / "results" / f"score_depth-{args.name}.json"
    dst.write_text(json.dumps(out, indent=2) + "\n")
    print(table(results))
    print(f"wrote {dst}")


def table(results: list[dict]) -> str:
    head = ("| variant | index s | mine s | score s | other s | whole run s | peak RSS MiB | pairs scored | "
            "skipped by depth | texts encoded | embeddings reused | export identical | with --pairing all |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in results:
        w, s = r["stage_wall_s"], r["score"]
        other = sum(v for k, v in w.items() if k not in ("index", "mine", "score"))
        lines.append(f"| {r['variant']} | {w.get('index', '-')} | {w.get('mine', '-')} | {w.get('score', '-')} | "
                     f"{other:.1f} | {r['wall_s']} | {r['peak_rss_mib']} | {s.get('scored_pairs', '-')} | "
                     f"{s.get('pairs_skipped_by_depth', '-')} | {s.get('texts_encoded', '-')} | "
                     f"{s.get('embeddings_reused', '-')} | {'yes' if r['export_identical_to_first'] else 'NO'} | "
                     f"{ {True: 'yes', False: 'NO', None: '-'}[r.get('export_identical_to_first_pairing_all')]} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
