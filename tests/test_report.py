"""`hardneg report` and the figures behind it (also printed by `hardneg summary` / `hardneg run`), and the page
rendered in headless Chromium."""

import base64
import html
import json
import os
import re
import shutil
import subprocess

import numpy as np
import polars as pl
import pytest

from conftest import invoke
from hardneg import report, schemas
from hardneg.config import FilterConfig, RelabelConfig, asdict
from hardneg.io.stagedir import read_manifest, read_stage
from hardneg.stages.filter import filter_table
from hardneg.stages.relabel import relabel_table
from conftest import ROWS, scored


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir, index_dirs, mined_dir, scored_dir):
    """A run directory laid out like `hardneg run`'s: the session's stages linked in, then filter (3 negatives per
    query, so some are `not_sampled`) and relabel run into it."""
    out = tmp_path_factory.mktemp("report") / "run"
    out.mkdir()
    for name, target in (("data", data_dir), ("index", index_dirs["hybrid"]), ("mined", mined_dir),
                         ("scored", scored_dir)):
        (out / name).symlink_to(target)
    invoke("filter", out / "scored", "--out", out / "filtered", "--negatives-per-query", "3")
    invoke("relabel", out / "filtered", "--out", out / "relabeled")
    return out


def relabeled(run):
    return pl.from_arrow(read_stage(run / "relabeled", "relabel", schemas.RELABELED))


def test_figures_of_a_hand_made_query():
    filter_cfg = asdict(FilterConfig(negatives_per_query=1))  # perc-pos 0.95 against the weakest positive (0.60)
    df = pl.from_arrow(relabel_table(filter_table(scored(ROWS), FilterConfig(**filter_cfg)), RelabelConfig()))
    fig = report.figures(df, filter_cfg)
    approx = lambda v: pytest.approx(v, abs=1e-6)  # noqa: E731  (float32 scores)
    assert {g: sorted(v.tolist()) for g, v in fig["scores"].items()} == {
        report.POSITIVE: approx([0.6, 0.8]), report.KEPT: approx([0.5]),
        "dropped: not_sampled": approx([0.2]), "dropped: perc_pos": approx([0.58, 0.7])}
    assert {g: sorted(v.tolist()) for g, v in fig["margins"].items()} == {
        report.KEPT: approx([-0.1]), "dropped: not_sampled": approx([-0.4]), "dropped: perc_pos": approx([-0.02, 0.1])}
    assert fig["margin_thresholds"] == [{"rule": "perc-pos", "lo": approx(-0.03), "hi": approx(-0.03),
                                         "median": approx(-0.03)}]
    assert fig["kept_per_query"].tolist() == [1] and fig["requested_per_query"] == 1
    assert fig["kept_ranks"].tolist() == [4] and fig["top_k"] == 5
    # suspects: rule drops (not not_sampled) by s minus the best positive (0.80), largest first
    assert [(s["doc_id"], s["positive_id"], round(s["margin"], 4)) for s in fig["suspects"]] == [
        ("a", "p1", -0.1), ("b", "p1", -0.22)]


def test_promoted_and_flagged_rows_are_named_as_what_they_are():
    filtered = filter_table(scored(ROWS + [("q", "e", 6, False, 0.85)]), FilterConfig(negatives_per_query=0))
    promoted = report.figures(pl.from_arrow(relabel_table(filtered, RelabelConfig(policy="relabel"))),
                              asdict(FilterConfig()))
    assert promoted["counts"][report.PROMOTED] == 1 and report.FLAGGED not in promoted["counts"]
    assert promoted["promoted_total"] == 1 and promoted["promoted"][0]["doc_id"] == "e"
    assert promoted["promoted"][0]["margin"] == pytest.approx(0.05, abs=1e-6)  # 0.85 - best positive 0.80
    flagged = report.figures(pl.from_arrow(relabel_table(filtered, RelabelConfig(policy="keep-flagged"))),
                             asdict(FilterConfig()))
    assert flagged["counts"][report.FLAGGED] == 1 and report.PROMOTED not in flagged["counts"]
    assert flagged["promoted_total"] == 0
    dropped = report.figures(pl.from_arrow(relabel_table(filtered, RelabelConfig())), asdict(FilterConfig()))
    assert report.PROMOTED not in dropped["counts"] and report.FLAGGED not in dropped["counts"]


def test_the_page_puts_promotions_first_and_cuts_long_ids(run, tmp_path):
    long_id = "doc-" + "x" * 60
    df = relabeled(run)
    q = df.filter(~pl.col("is_positive"))["query_id"][0]
    extra = df.filter(pl.col("query_id") == q).head(1).with_columns(
        pl.lit(long_id).alias("doc_id"), pl.lit(False).alias("is_positive"), pl.lit("positive").alias("label"),
        pl.lit("teacher").alias("label_source"), pl.lit(9.0, dtype=pl.Float32).alias("teacher_score"))
    data = report.collect(run)
    data["figures"] = report.figures(pl.concat([df, extra]), read_manifest(run / "filtered")["config"])
    page = tmp_path / "r.html"
    report.write(data, page)
    text = page.read_text()
    assert text.index("Positives: labeled and promoted") < text.index("<h2>Teacher scores</h2>")
    assert "1 candidates were promoted to positive" in text
    assert long_id not in text.replace(f'title="{long_id}"', "") and f'title="{long_id}"' in text


def test_thresholds_and_lines_of_the_other_rules():
    df = pl.from_arrow(relabel_table(filter_table(scored(ROWS), FilterConfig()), RelabelConfig()))
    cfg = asdict(FilterConfig(rules=["margin-pos", "max-score", "min-score"], margin=0.1, max_score=0.65,
                              min_score=0.3))
    fig = report.figures(df, cfg)
    assert fig["margin_thresholds"] == [{"rule": "margin-pos", "lo": -0.1, "hi": -0.1, "median": -0.1}]
    assert fig["score_lines"] == {"max-score": 0.65, "min-score": 0.3}
    assert report.figures(df, asdict(FilterConfig(rules=["max-score"], max_score=0.5)))["margin_thresholds"] == []


def test_figures_account_for_every_row_of_a_run(run, dup_id):
    df = relabeled(run)
    cfg = read_manifest(run / "filtered")["config"]
    fig = report.figures(df, cfg, top=1000)
    promoted = (df["label"] == "positive") & ~df["is_positive"]
    assert sum(len(v) for v in fig["scores"].values()) == df.height
    assert len(fig["scores"][report.POSITIVE]) == df["is_positive"].sum()
    assert len(fig["scores"].get(report.PROMOTED, [])) == promoted.sum()
    for reason in df["reason"].drop_nulls().unique():
        assert len(fig["scores"][f"dropped: {reason}"]) == ((df["reason"] == reason) & ~promoted).sum()
    assert {g: len(v) for g, v in fig["scores"].items()} == fig["counts"]  # cards and panels count alike
    assert sum(len(v) for v in fig["margins"].values()) == (~df["is_positive"]).sum()  # every query has a positive
    kept = df.filter(pl.col("label") == "negative")
    assert fig["kept_per_query"].sum() == kept.height and len(fig["kept_per_query"]) == df["query_id"].n_unique()
    assert fig["kept_per_query"].max() <= 3 and sorted(fig["kept_ranks"]) == sorted(kept["rank"])
    # the perc-pos threshold band is right: every perc_pos drop lies right of its lower end, every kept negative left
    # of its upper end, and the band is -|p| * 5% over the queries' weakest positives
    (t,) = fig["margin_thresholds"]
    assert fig["margins"]["dropped: perc_pos"].min() > t["lo"] and fig["margins"][report.KEPT].max() <= t["hi"]
    weakest = df.filter(pl.col("is_positive")).group_by("query_id").agg(pl.col("teacher_score").min())
    band = -np.abs(weakest["teacher_score"].to_numpy()) * (1 - cfg["ratio"])
    assert t["lo"] == pytest.approx(band.min()) and t["hi"] == pytest.approx(band.max())
    # suspects: rule drops and promotions only, largest margin first; the injected duplicate of a positive is one
    margins = [s["margin"] for s in fig["suspects"]]
    assert margins == sorted(margins, reverse=True)
    assert all(s["reason"] != "not_sampled" for s in fig["suspects"])
    assert (dup_id[1]) in {s["doc_id"] for s in fig["suspects"] if s["query_id"] == dup_id[0]}


def test_summary_prints_the_figures(run):
    out = invoke("summary", run).output
    for line in ("teacher score", "  positive (qrels)", "margin s - p", "perc-pos drops at s - p >", "kept per query",
                 "kept negative rank", "top suspects"):
        assert line in out, line
    figs = json.loads(invoke("summary", run, "--json").output)["figures"]
    assert figs["teacher_score"]["positive (qrels)"]["rows"] == relabeled(run)["is_positive"].sum()
    assert figs["kept_per_query"]["requested"] == 3 and len(figs["top_suspects"]) == 3


@pytest.fixture(scope="module")
def page(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("page") / "report.html"
    result = invoke("report", run, "--out", out)
    assert str(out) in result.output
    return out


def test_report_is_one_self_contained_page_with_its_plots_beside_it(page, run):
    text = page.read_text()
    pngs = sorted((page.parent / "report_files").glob("*.png"))
    assert [p.name for p in pngs] == ["margins.png", "scores.png", "yield.png"]
    srcs = re.findall(r'<img src="([^"]*)"', text)
    assert len(srcs) == 3 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert sorted(base64.b64decode(s.split(",", 1)[1]) for s in srcs) == sorted(p.read_bytes() for p in pngs)
    # nothing to fetch: no attribute pointing anywhere but data:, no CSS url() or @import, no script, no link
    assert not re.search(r"""\b(src|href|srcset|action|data)\s*=\s*(?!["']?data:)""", text)
    assert not re.search(r"url\(|@import|<script|<link|<iframe|<object", text)
    for stage in ("import", "index", "mine", "score", "filter", "relabel"):  # provenance
        assert f"<b>{stage}</b>" in text
    assert "all-MiniLM-L6-v2" in text and "perc-pos: drop if s &gt; p" in text


def test_report_escapes_texts(run, tmp_path):
    data = report.collect(run, top=2)
    data["figures"]["suspects"][0]["candidate_text"] = "<script>alert(1)</script> & <b>bold</b>"
    report.write(data, tmp_path / "r.html")
    text = (tmp_path / "r.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in text and "<script>" not in text


def test_report_of_a_run_without_filter_is_one_line_error(tmp_path):
    result = invoke("report", tmp_path, ok=False)
    assert result.exit_code == 2 and "filtered: no such directory" in result.output


# -- the page in a real browser ----------------------------------------------------------------------------------
# Runs first thing in <head>: records script errors and failed resource loads (capture phase, so <img> errors too).
HEAD_PROBE = """<script>window.__errors = [];
window.onerror = function (m) { window.__errors.push(String(m)); };
window.addEventListener('error', function (e) { if (e.target && e.target.tagName)
  window.__errors.push('failed to load ' + e.target.tagName); }, true);</script>"""
# Runs on load: writes what it found into the title, which --dump-dom prints.
LOAD_PROBE = """<script>window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  document.title = 'PROBE' + JSON.stringify({images: imgs.length,
    broken: imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; })
      .map(function (i) { return i.alt; }),
    widths: imgs.map(function (i) { return i.naturalWidth; }), errors: window.__errors,
    fetched: performance.getEntriesByType('resource').map(function (r) { return r.name; })}) + 'PROBE';
});</script>"""


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; `make test` installs it (make browser)")
        pytest.skip("chromium is not installed (`make browser` installs it)")
    return path


def browse(chromium, tmp_path, url, *args):
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--disable-quic", "--disable-dev-shm-usage",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


def test_page_renders_in_headless_chromium(chromium, page, tmp_path):
    import matplotlib.image

    probed = tmp_path / "probed.html"
    text = page.read_text()
    probed.write_text(text.replace("<head>", "<head>" + HEAD_PROBE, 1).replace("</body>", LOAD_PROBE + "</body>", 1))
    # the page forbids scripts in its CSP; the probe copy drops that line so the probe can run
    probed.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", probed.read_text()))
    dom = browse(chromium, tmp_path, probed.as_uri(), "--dump-dom").stdout
    found = json.loads(html.unescape(re.search(r"PROBE(.*?)PROBE", dom, re.S).group(1)))
    assert found["images"] == 3 and found["broken"] == [] and found["errors"] == [] and found["fetched"] == []
    assert all(w >= 800 for w in found["widths"])

    shot = tmp_path / "shot.png"
    browse(chromium, tmp_path, page.as_uri(), f"--screenshot={shot}", "--window-size=1280,2400", "--hide-scrollbars")
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1280)
    assert pixels.std() > 0.05  # not blank
    # the plots are on screen: many pixels of the kept-negative blue (bars drawn at alpha 0.85 on white)
    blue = np.array([0x1C, 0x7E, 0xD6]) / 255 * 0.85 + 0.15
    assert (np.abs(pixels - blue).max(axis=-1) < 0.04).sum() > 500
