"""Compare two `pytest --durations=0` logs test by test (issue 18: "make test is no slower than today").

    git worktree add --detach /tmp/old a6224b6
    (cd /tmp/old && PYTHONPATH=$PWD HF_HUB_OFFLINE=1 /path/to/.venv/bin/python -m pytest -q --durations=0) > old.log
    PYTHONPATH=$PWD HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q --durations=0 > new.log
    python bench/suite_durations.py new.log old.log

Sums setup + call + teardown per test id, then compares the ids both suites have, and lists what only one has.
"""
import collections
import re
import sys


def parse(path):
    d = collections.defaultdict(float)
    for line in open(path):
        m = re.match(r"\s*([\d.]+)s (setup|call|teardown)\s+(\S+)", line)
        if m:
            d[m.group(3)] += float(m.group(1))
    return d
new, old = parse(sys.argv[1]), parse(sys.argv[2])
common = set(new) & set(old)
print("tests with durations: new", len(new), "old", len(old), "common ids", len(common))
print("common: new %.1f s, old %.1f s" % (sum(new[t] for t in common), sum(old[t] for t in common)))
print("only-new total %.1f s (%d ids), only-old total %.1f s (%d ids)" % (sum(new[t] for t in set(new)-common), len(set(new)-common), sum(old[t] for t in set(old)-common), len(set(old)-common)))
print("all: new %.1f, old %.1f" % (sum(new.values()), sum(old.values())))
byfile = collections.defaultdict(lambda: [0.0, 0.0])
for t in common:
    f = t.split("::")[0]; byfile[f][0] += new[t]; byfile[f][1] += old[t]
for f, (a, b) in sorted(byfile.items(), key=lambda x: -abs(x[1][0]-x[1][1]))[:12]:
    print(f"{f:40s} new {a:7.1f} old {b:7.1f}")
only = sorted(((new[t], t) for t in set(new)-common), reverse=True)[:12]
for v, t in only: print(f"  new-only {v:6.1f} {t}")
