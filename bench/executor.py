"""Local executor vs `--executor ray` on NFCorpus: wall time of `index` (dense), `mine` and `score`, same inputs.

One run, same machine, same options. Each step is its own process, timed from the outside; the two executors
alternate stage by stage (local index, ray index, local mine, ...) so a drift in machine load hits both. The Ray
steps start their own local Ray instance (no RAY_ADDRESS), so each includes Ray's start-up, as a user's command
would. After the run, the parts of both sides are compared byte for byte.

On one 2-core machine Ray cannot win: both executors run the same model code on the same 2 cores; Ray adds its
start-up, actor scheduling and one model load per actor. The table shows that overhead. Peak RSS is the driver's
alone for Ray (its actors are not children of the command), so it is reported for the local side only.

    python bench/executor.py --data /work/shared/data/nfcorpus
    python bench/executor.py --data /work/shared/data/nfcorpus --max-queries 50 --max-docs 1000   # a seeded slice
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from benchutil import NFCORPUS, beir_parser, data_slice, fresh_workdir, timed  # noqa: E402


def digests(stage_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(stage_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(stage_dir.rglob("*")) if p.is_file() and p.name != "_manifest.json"
            and "_shards" not in p.parts}


def main() -> None:
    ap = beir_parser(__doc__, data_help=NFCORPUS, raw=True, slices=True)
    ap.add_argument("--top-k", type=int, default=50)
    ap.add_argument("--max-seq-length", type=int, default=128, help="both executors, index and teacher")
    ap.add_argument("--ray-actors", type=int, default=0, help="0 = one per CPU of the local Ray instance")
    ap.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "executor.json")
    args = ap.parse_args()

    work = fresh_workdir(args.work, "hardneg-exec-")
    log = work / "log.txt"
    src = data_slice(args, work / "src")
    env_bin = str(Path(sys.executable).parent / "hardneg")
    hn = [env_bin] if Path(env_bin).exists() else [sys.executable, "-m", "hardneg"]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.pop("RAY_ADDRESS", None)
    timed([*hn, "import", str(src), "--out", str(work / "data"), "--split", args.split], log)
    msl = ["--max-seq-length", str(args.max_seq_length)]
    ray = ["--executor", "ray", *(["--ray-actors", str(args.ray_actors)] if args.ray_actors else [])]
    stages = {
        "index": lambda side: ["index", str(work / "data"), "--out", str(work / side / "index"), "--retriever",
                               "dense", *msl],
        "mine": lambda side: ["mine", str(work / side / "index"), "--data", str(work / "data"), "--out",
                              str(work / side / "mined"), "--top-k", str(args.top_k)],
        "score": lambda side: ["score", str(work / side / "mined"), "--data", str(work / "data"), "--out",
                               str(work / side / "scored"), "--no-cache", *msl],
    }
    rows = {}
    for stage, cmd in stages.items():
        rows[stage] = {"local": timed([*hn, *cmd("local")], log), "ray": timed([*hn, *cmd("ray"), *ray], log)}
        print(f"{stage}: local {rows[stage]['local']['wall_s']} s, ray {rows[stage]['ray']['wall_s']} s", flush=True)
    dir_of = {"index": "index", "mine": "mined", "score": "scored"}
    identical = {stage: digests(work / "local" / d) == digests(work / "ray" / d) for stage, d in dir_of.items()}
    manifest = json.loads((work / "local" / "mined" / "_manifest.json").read_text())
    result = {
        "data": str(args.data), "split": args.split, "top_k": args.top_k, "max_seq_length": args.max_seq_length,
        "queries": manifest["summary"]["queries"],
        "documents": json.loads((work / "local" / "index" / "_manifest.json").read_text())["summary"]["documents"],
        "ray_actors": args.ray_actors or "one per CPU", "cpus": os.cpu_count(), "machine": platform.machine(),
        "load_average_after": os.getloadavg(), "stages": rows, "identical_outputs": identical,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    total = {side: sum(rows[s][side]["wall_s"] for s in rows) for side in ("local", "ray")}
    print(f"\n{result['documents']} documents, {result['queries']} queries, top-k {args.top_k}, "
          f"max_seq_length {args.max_seq_length}, {os.cpu_count()} CPUs\n")
    print("| stage | local | ray | ray / local | identical parts |")
    print("|---|---|---|---|---|")
    for stage in rows:
        lo, ra = rows[stage]["local"]["wall_s"], rows[stage]["ray"]["wall_s"]
        print(f"| {stage} | {lo:.1f} s | {ra:.1f} s | {ra / lo:.2f}x | {'yes' if identical[stage] else 'NO'} |")
    print(f"| total | {total['local']:.1f} s | {total['ray']:.1f} s | {total['ray'] / total['local']:.2f}x | |")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
