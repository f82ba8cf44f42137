"""The filter rules' registry (hardneg.rules) is the one place a rule is written: the filter, the config, the CLI, the
report, the drop reasons and docs/filters.md all read it. And the one text normalization both mine and filter use."""

import json
import re
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from conftest import invoke
from hardneg import report, rules, schemas
from hardneg.cli import app
from hardneg.config import FilterConfig, RelabelConfig, asdict, from_dict, validate
from hardneg.errors import HardnegError
from hardneg.io import data
from hardneg.io.stagedir import StageWriter
from hardneg.stages import filter as filter_stage
from hardneg.stages.filter import filter_table
from hardneg.stages.relabel import relabel_table
from conftest import ROWS, scored

DOCS = Path(__file__).parent.parent / "docs" / "filters.md"


def help_of(*command: str) -> str:
    """`hardneg COMMAND --help`, unwrapped (one long line per option), whitespace collapsed."""
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=10_000, max_content_width=10_000)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def filter_cli(monkeypatch, *args: str):
    """Run `hardneg filter` up to the stage: the FilterConfig the stage would get (and the CLI's result)."""
    got = []

    def run(scored_dir, out, cfg, *rest, **kw):
        got.append(cfg)
        return {"stage": "filter", "parts": {}, "summary": {}}

    monkeypatch.setattr(filter_stage, "run", run)
    result = CliRunner().invoke(app, ["filter", "scored", "--out", "out", *args])
    return (got[0] if got else None), result


@pytest.fixture
def toy_rule():
    """A rule registered at run time, as a user or plugin would: drop a candidate within 0.3 of its positive."""
    rule = rules.register(rules.Rule(
        "close-call", "close_call", "s > p − 0.3 (a toy rule of the tests)",
        condition=lambda cfg: pl.col("teacher_score") > pl.col("_pos") - 0.3,
        margin=lambda cfg: pl.lit(-0.3)))
    yield rule
    rules.unregister(rule.name)


def test_a_toy_rule_added_through_the_registry_reaches_cli_filter_and_report(toy_rule, monkeypatch):
    # the filter: its reason, after the rules before it (perc-pos 0.95 against the weakest positive, 0.60)
    cfg = validate(FilterConfig(rules=["perc-pos", "close_call"], negatives_per_query=0))
    assert cfg.rules == ["perc-pos", "close-call"]
    filtered = filter_table(scored(ROWS), cfg)
    got = dict(zip(filtered["doc_id"].to_pylist(), filtered["reason"].to_pylist()))
    assert got == {"p1": None, "p2": None, "a": "perc_pos", "b": "perc_pos", "c": "close_call", "d": None}
    assert "close_call" in schemas.DROP_REASONS and "close-call" in rules.RULES
    # the CLI: listed with its summary in `filter --help`, accepted by either spelling
    text = help_of("filter")
    assert "close-call drops if s > p − 0.3 (a toy rule of the tests)" in text
    for rule in rules.RULES.values():
        assert f"{rule.name} drops if {' '.join(rule.summary.split())}" in text
    for spelling in ("close-call", "close_call"):
        cli_cfg, result = filter_cli(monkeypatch, "--rule", spelling)
        assert result.exit_code == 0, result.output
        assert cli_cfg.rules == ["close-call"]
    # the report: its margin on s − p in the margin plot, its text in the page's filter line, its drops as a panel
    relabeled = pl.from_arrow(relabel_table(filtered, RelabelConfig()))
    fig = report.figures(relabeled, asdict(cfg))
    assert [t["rule"] for t in fig["margin_thresholds"]] == ["perc-pos", "close-call"]
    assert fig["margin_thresholds"][1] == {"rule": "close-call", "lo": -0.3, "hi": -0.3, "median": -0.3}
    assert "dropped: close_call" in fig["scores"]
    assert report._rule_text(asdict(cfg)) == ("perc-pos: drop if s > p − |p|·(1 − 0.95); "
                                              "close-call: drop if s > p − 0.3 (a toy rule of the tests)")


def test_the_toy_rule_is_gone_after_its_test():
    assert "close-call" not in rules.RULES and "close_call" not in schemas.DROP_REASONS
    assert "close-call" not in help_of("filter")


def test_a_rule_name_or_reason_is_registered_once(toy_rule):
    for name, reason in (("close-call", "other"), ("other", "close_call"), ("close_call", "other"),
                         ("other", "perc_pos"), ("perc_pos", "other")):
        with pytest.raises(ValueError, match="same name or reason"):
            rules.register(rules.Rule(name, reason, "x", condition=lambda cfg: pl.lit(False)))
    assert len(rules.RULES) == 8


def test_perc_pos_spelled_as_its_reason_is_accepted_by_cli_and_config_and_means_perc_pos(monkeypatch):
    cfg, result = filter_cli(monkeypatch, "--rule", "perc_pos", "--rule", "near_duplicate_of_positive",
                             "--rule", "rank_window", "--rank-min", "2")
    assert result.exit_code == 0, result.output
    assert cfg.rules == ["perc-pos", "near-duplicate", "rank-window"]
    assert from_dict(FilterConfig, {"rules": ["perc_pos", "perc-pos"]}, "cfg.toml [filter]").rules == ["perc-pos"]
    same = [filter_table(scored(ROWS), FilterConfig(rules=[r], negatives_per_query=0))["reason"].to_pylist()
            for r in ("perc_pos", "perc-pos")]
    assert same[0] == same[1] and "perc_pos" in same[0]
    cfg, result = filter_cli(monkeypatch, "--rule", "perc_pos_typo")
    assert result.exit_code == 2 and cfg is None
    assert "unknown filter rule 'perc_pos_typo'; choose from perc-pos, margin-pos" in result.output
    with pytest.raises(HardnegError, match="cfg.toml: unknown filter rule 'nope'"):
        from_dict(FilterConfig, {"rules": ["nope"]}, "cfg.toml")


def test_ratio_help_says_what_perc_pos_does():
    text = help_of("filter")
    assert "--ratio <float> perc-pos: drop if s > p − |p|(1 − ratio)" in text
    assert "ratio x" not in text


def test_the_rank_window_skips_rank_min_ranks_as_mine_skips_range_min():
    """filter's rank_min means mine's range_min: ranks rank_min + 1 .. rank_max are kept, both bounds as mine's."""
    rows = [("q", "p", None, True, 0.9)] + [("q", f"r{r}", r, False, 0.1) for r in range(1, 7)]
    kept = filter_table(scored(rows), validate(FilterConfig(rules=["rank-window"], rank_min=2, rank_max=4,
                                                            negatives_per_query=0)))
    assert [d for d, k in zip(kept["doc_id"].to_pylist(), kept["keep"].to_pylist()) if k] == ["p", "r3", "r4"]
    text = help_of("filter")
    mine = help_of("mine")
    assert "--rank-min <int> Skip the N best-ranked candidates" in text
    assert "--range-min <int> Skip the N best-ranked candidates" in mine
    assert "--rank-max <int> Last rank kept" in text and "--range-max <int> Last rank kept" in mine
    with pytest.raises(HardnegError, match="rank_min = 4 is not below rank_max = 4"):
        validate(FilterConfig(rules=["rank-window"], rank_min=4, rank_max=4))


def test_positive_rank_drops_the_queries_whose_best_positive_the_teacher_outranks_and_scores_the_whole_pool():
    """A query keeps its candidates only while fewer than max_positive_rank of them score above its best positive;
    the rule reads every candidate, so score's adaptive depth does not stop early for it."""
    from hardneg.config import ScoreConfig
    from hardneg.stages.score import depth_plan

    rows = ([("q1", "p", 9, True, 0.50), ("q1", "w", None, True, 0.10)]    # best positive outranked by 2
            + [("q1", f"a{i}", i, False, s) for i, s in enumerate((0.9, 0.8, 0.3, 0.2), 1)]
            + [("q2", "p", 1, True, 0.90)]                                   # outranked by 1
            + [("q2", f"b{i}", i, False, s) for i, s in enumerate((0.95, 0.4, 0.3), 1)])
    cfg = validate(FilterConfig(rules=["positive-rank", "perc-pos"], max_positive_rank=2, negatives_per_query=0))
    df = pl.from_arrow(filter_table(scored(rows), cfg))
    kept = df.filter(pl.col("keep") & ~pl.col("is_positive"))["doc_id"].to_list()
    assert kept == ["b2", "b3"]  # q2: b1 by perc-pos only
    assert set(df.filter(pl.col("query_id") == "q1").filter(~pl.col("is_positive"))["reason"]) == {
        "positive_outranked"}
    assert df.filter(pl.col("is_positive"))["keep"].all()
    plan, why = depth_plan(ScoreConfig(), FilterConfig(**{**asdict(cfg), "negatives_per_query": 5}),
                           RelabelConfig(policy="drop"))
    assert plan is None and "positive-rank" in why
    assert depth_plan(ScoreConfig(), FilterConfig(rules=["perc-pos"]), RelabelConfig(policy="drop"))[0] is not None
    with pytest.raises(HardnegError, match="rule positive-rank needs a value: pass --max-positive-rank"):
        validate(FilterConfig(rules=["positive-rank"]))


def test_the_rule_checks_run_through_config_validate():
    for cfg, message in ((FilterConfig(rules=["max-score"]), "rule max-score needs a value: pass --max-score X"),
                         (FilterConfig(rules=["max-score", "min-score"], max_score=0.3, min_score=0.5),
                          "min_score = 0.5 is not below max_score = 0.3"),
                         (FilterConfig(ratio=1.5), "ratio = 1.5 must be in (0, 1]"),
                         (FilterConfig(rank_max=3), "rank_max is set but rule rank-window is not in rules"),
                         (FilterConfig(min_score=0.1), "min_score is set but rule min-score is not in rules"),
                         (FilterConfig(rules=["near-duplicate"], dup_threshold=2.0), "dup_threshold = 2.0 is a cosine"),
                         (FilterConfig(rules=["rank-window"]), "rule rank-window needs a bound")):
        with pytest.raises(HardnegError, match=re.escape(message)):
            validate(cfg, "cfg.toml [filter]")


def test_judge_suspect_reasons_are_checked_against_the_rules_reasons():
    from hardneg.config import JudgeConfig

    assert validate(JudgeConfig(suspect_reasons=["perc_pos", "outside_rank_window"])).suspect_reasons
    with pytest.raises(HardnegError, match="suspect reason 'perc-pos' is not a filter reason"):
        validate(JudgeConfig(suspect_reasons=["perc-pos"]))


def test_drop_reasons_are_the_rules_then_the_others():
    assert schemas.DROP_REASONS == tuple(r.reason for r in rules.RULES.values()) + schemas.OTHER_DROP_REASONS
    assert set(schemas.OTHER_DROP_REASONS) == {"not_sampled", "too_few_negatives", "not_scored"}


def test_the_rule_table_of_docs_filters_md_is_the_registry():
    text = DOCS.read_text()
    table = re.search(r"<!-- rules: generated by hardneg.rules.markdown_table\(\)[^\n]*-->\n(.*?)<!-- /rules -->",
                      text, re.DOTALL)
    assert table is not None, "docs/filters.md lost its generated rule table"
    assert table.group(1) == rules.markdown_table(), (
        "docs/filters.md's rule table differs from the registry: paste hardneg.rules.markdown_table() in")


# -- one text normalization -----------------------------------------------------------------------------------------

TRICKY = ["COVID-19", "COVID19", "covid 19", "well\u2011known", "well-known", "wellknown", "Café", "Cafe\u0301",
          "cafe", "snake_case", "snakecase", "a\tb\nc\r\nd", "a b c d", "a\u00a0b", "ΟΔΟΣ", "Straße", "", "  ", "!?",
          "co\u00adoperate", "ﬁne", "Ｆｕｌｌ"]


def test_one_text_normalization_scalar_and_arrow_agree_on_tricky_strings():
    vector = data.normalize_text(pa.array(TRICKY)).to_pylist()
    assert [data.normalize(t) for t in TRICKY] == vector
    norm = dict(zip(TRICKY, vector))
    same = [("COVID-19", "COVID19"), ("well\u2011known", "well-known"), ("well-known", "wellknown"),
            ("Café", "Cafe\u0301"), ("snake_case", "snakecase"), ("a\tb\nc\r\nd", "a b c d"),
            ("co\u00adoperate", "cooperate"), ("ﬁne", "fine"), ("Ｆｕｌｌ", "full")]
    for a, b in same:
        assert data.normalize(a) == data.normalize(b), (a, b)
    assert norm["Café"] != norm["cafe"]  # accents are kept
    assert norm["COVID19"] != norm["covid 19"]  # a space is a word boundary, a hyphen is not
    assert norm["a\u00a0b"] == "a b" and norm[""] == norm["  "] == norm["!?"] == ""


def test_mine_and_filter_judge_the_same_texts_the_same(tmp_path):
    """The index's text keys (mine's same_text_as_positive) and the filter's near-duplicate rule, run as stages,
    agree on texts that differ only in case, punctuation, unicode hyphens and spacing."""
    texts = {"pos": "COVID-19 vaccine: well\u2011known effects", "dup": "covid19 VACCINE — well-known\teffects!",
             "other": "covid 19 vaccine, well known effects"}
    src = tmp_path / "src"
    (src / "qrels").mkdir(parents=True)
    (src / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n"
                                              for d, t in texts.items()))
    (src / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "covid vaccine effects"}) + "\n")
    (src / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\tpos\t1\n")
    invoke("import", src, "--out", tmp_path / "data")
    corpus = data.load(tmp_path / "data")["corpus"]
    keys = dict(zip(corpus["doc_id"].to_pylist(), data.text_keys(corpus).to_pylist()))
    assert keys["pos"] == keys["dup"] != keys["other"]

    rows = [("q", "pos", None, True, 0.9), ("q", "dup", 1, False, 0.1), ("q", "other", 2, False, 0.1)]
    with StageWriter(tmp_path / "scored", "score", {"fake": True}) as w:
        w.write_table("part-00000.parquet", scored(rows))
        w.finish()
    cfg = validate(FilterConfig(rules=["near-duplicate"], negatives_per_query=0))
    filter_stage.run(tmp_path / "scored", tmp_path / "filtered", cfg, data_dir=tmp_path / "data")
    out = pl.read_parquet(tmp_path / "filtered" / "part-00000.parquet")
    assert dict(zip(out["doc_id"], out["reason"])) == {"pos": None, "dup": "near_duplicate_of_positive",
                                                       "other": None}
