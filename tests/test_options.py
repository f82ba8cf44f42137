"""Options are declared once: the stage commands' config options are generated from the config dataclasses, and
`hardneg run` without --config is the shipped configs/default.toml. No model is loaded here: the tests read the
generated parameters, parse command lines, and stop the commands at the stage call."""

from __future__ import annotations

import dataclasses
import enum
import tomllib
from pathlib import Path

import pytest
import typer.main
from conftest import invoke

from hardneg import config
from hardneg.cli import app
from hardneg.cli.options import field_help
from hardneg.config import (ExportConfig, FilterConfig, ImportConfig, IndexConfig, JudgeConfig, MineConfig,
                            PipelineConfig, RelabelConfig, ScoreConfig, load_pipeline, resolve_pipeline, to_toml)
from hardneg.errors import HardnegError
from hardneg.judges import JudgeSpec

ROOT = Path(__file__).parent.parent

# command -> the dataclasses its options are generated from, and the fields it leaves out
STAGES = {
    "import": [(ImportConfig, ())],
    "index": [(IndexConfig, ())],
    "mine": [(MineConfig, ())],
    "score": [(ScoreConfig, ())],
    "filter": [(FilterConfig, ("rules",))],  # --rule: help from the rule registry (tests/test_rules.py)
    "judge": [(JudgeConfig, ("judges",)), (JudgeSpec, ())],
    "relabel": [(RelabelConfig, ())],
    "export": [(ExportConfig, ())],
}
# today's spellings that differ from the field's --field-name: still accepted
ALIASES = {("score", "--teacher"): "model", ("filter", "--rule"): "rules", ("judge", "--suspect-reason"):
           "suspect_reasons", ("export", "--output-scores"): "scores"}


def commands():
    return typer.main.get_command(app).commands


def plain(value):
    return value.value if isinstance(value, enum.Enum) else list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("name", STAGES)
def test_cli_defaults_and_help_are_the_dataclass_fields(name):
    params = {p.name: p for p in commands()[name].params}
    help_text = "".join(invoke(name, "--help").output.split())
    for cls, exclude in STAGES[name]:
        defaults = cls()
        for f in dataclasses.fields(cls):
            if f.name in exclude:  # declared by the command itself, or not on the command line
                assert f.name not in params or plain(params[f.name].default) == getattr(defaults, f.name)
                continue
            p = params[f.name]
            assert plain(p.default) == getattr(defaults, f.name), f"{name} --{f.name}"
            assert "--" + f.name.replace("_", "-") in p.opts, f"{name}: {p.opts}"
            assert field_help(cls, f.name) and p.help.startswith(field_help(cls, f.name)), f"{name} --{f.name}"
            choices = f.metadata.get("choices") or config.CHOICES.get(f.name)
            if choices:
                assert "<" + "|".join(choices) + ">" in help_text, f"{name} --{f.name}"


def test_every_stage_that_runs_units_has_the_execution_options():
    """index, mine, score, filter, judge and relabel all run through hardneg.executor; relabel never needs a GPU."""
    for name in ("index", "mine", "score", "filter", "judge", "relabel"):
        params = {p.name for p in commands()[name].params}
        assert {"shard", "executor", "ray_actors"} <= params, name
        assert ("ray_gpus_per_actor" in params) == (name != "relabel"), name


def test_every_option_name_of_before_still_parses():
    for (name, flag), field_name in ALIASES.items():
        cmd = commands()[name]
        value = [] if field_name == "scores" else ["perc_pos"] if field_name == "rules" else ["x"]
        ctx = cmd.make_context(name, ["in", "--out", "o", "--data", "d", flag, *value])
        assert plain(ctx.params[field_name]) in ("x", ["x"], True, ["perc-pos"]), (name, flag)


def test_every_field_has_help():
    for cls in (ImportConfig, IndexConfig, MineConfig, ScoreConfig, FilterConfig, RelabelConfig, JudgeConfig,
                ExportConfig, JudgeSpec):
        for f in dataclasses.fields(cls):
            assert field_help(cls, f.name), f"{cls.__name__}.{f.name} has no help text"


@pytest.fixture
def stop_at(monkeypatch):
    """Replace a stage function by one that records its arguments and stops the command (exit code 2)."""
    seen = {}

    def patch(module, attr="run"):
        def fake(*args, **kwargs):
            seen["args"], seen["kwargs"] = args, kwargs
            raise HardnegError("stopped by the test")

        monkeypatch.setattr(module, attr, fake)
        return seen

    return patch


def test_filter_options_build_the_config_and_imply_rules(stop_at, tmp_path):
    import hardneg.stages.filter as stage

    seen = stop_at(stage)
    invoke("filter", tmp_path, "--out", tmp_path / "o", "--rule", "perc-pos", "--max-score", "0.9", "--rank-max",
           "40", "--ratio", "0.9", "--sampling", "random", ok=False)
    cfg = seen["args"][2]
    assert cfg == dataclasses.replace(FilterConfig(), rules=["perc-pos", "max-score", "rank-window"], max_score=0.9,
                                      rank_max=40, ratio=0.9, sampling="random")
    bad = invoke("filter", tmp_path, "--out", tmp_path / "o", "--rule", "no-such-rule", ok=False)
    assert bad.exit_code == 2 and "unknown filter rule 'no-such-rule'" in bad.output


def test_score_teacher_alias_and_judge_single_judge(stop_at, tmp_path):
    import hardneg.stages.judge as judge_stage
    import hardneg.stages.score as score_stage

    seen = stop_at(score_stage)
    invoke("score", tmp_path, "--data", tmp_path, "--out", tmp_path / "o", "--teacher", "my-teacher", ok=False)
    assert seen["args"][3] == dataclasses.replace(ScoreConfig(), model="my-teacher")
    seen = stop_at(judge_stage)
    invoke("judge", tmp_path, "--data", tmp_path, "--out", tmp_path / "o", "--backend", "openai", "--model", "m",
           "--no-margin", "--suspect-reason", "perc_pos", ok=False)
    cfg = seen["args"][3]
    assert cfg.margin is None and cfg.suspect_reasons == ["perc_pos"]
    assert cfg.judges == [dataclasses.asdict(JudgeSpec(backend="openai", model="m"))]


def test_run_without_config_is_the_shipped_default(stop_at, tmp_path):
    import hardneg.pipeline as pipeline

    shipped = load_pipeline(ROOT / "configs" / "default.toml")
    assert resolve_pipeline() == resolve_pipeline("default") == resolve_pipeline(None) == shipped
    assert shipped != PipelineConfig()  # the reason: the dataclass defaults are each stage's, not the pipeline's
    seen = stop_at(pipeline)
    invoke("run", tmp_path, "--out", tmp_path / "run", ok=False)
    assert seen["args"][2] == shipped
    invoke("run", tmp_path, "--out", tmp_path / "run", "--config", "bm25-fast", "--set", "filter.ratio=0.9", ok=False)
    expected = load_pipeline(ROOT / "configs" / "bm25-fast.toml")
    expected.filter.ratio = 0.9
    assert seen["args"][2] == expected


def test_packaged_names_resolve_and_paths_still_work(tmp_path):
    packaged = config.packaged_configs()
    assert list(packaged)[0] == "default"
    assert {p.name for p in packaged.values()} == {p.name for p in (ROOT / "configs").glob("*.toml")}
    assert config.config_path("bm25-fast") == packaged["bm25-fast"]
    assert config.config_path(ROOT / "configs" / "simans.toml") == ROOT / "configs" / "simans.toml"
    (tmp_path / "mine.toml").write_text("[mine]\ntop_k = 7\n")
    assert resolve_pipeline(tmp_path / "mine.toml").mine.top_k == 7
    with pytest.raises(HardnegError, match="hardneg config list"):
        config.config_path("no-such-config")
    missing = invoke("run", tmp_path, "--out", tmp_path / "r", "--config", tmp_path / "nope.toml", ok=False)
    assert missing.exit_code == 2 and "hardneg config list" in missing.output and "configs/" not in missing.output


def test_config_list_names_every_packaged_config():
    out = invoke("config", "list").output.splitlines()
    assert [line.split()[0] for line in out] == list(config.packaged_configs())
    assert all(len(line.split(None, 1)[1]) > 20 for line in out)


@pytest.mark.parametrize("name", list(config.packaged_configs()))
def test_config_show_round_trips(name, tmp_path):
    shown = invoke("config", "show", name).output
    (tmp_path / "shown.toml").write_text(shown)
    assert load_pipeline(tmp_path / "shown.toml") == resolve_pipeline(name)
    keys = {section: set(table) for section, table in tomllib.loads(shown).items()}
    for f in dataclasses.fields(PipelineConfig):
        section = getattr(resolve_pipeline(name), f.name)
        if section is not None:  # every key: set ones as TOML, unset (None) ones as comments
            for sf in dataclasses.fields(section):
                assert sf.name in keys[f.name.rstrip("_")] or f"# {sf.name}: unset" in shown


def test_config_show_with_set_and_a_judge_section(tmp_path):
    # a rule taken out of the default's `rules` has its value unset with `key=none`
    shown = invoke("config", "show", "--set", "judge.max_per_query=3", "--set", 'export.prompt="q: \\"x\\""',
                   "--set", "index.retriever=bm25", "--set", 'filter.rules=["perc-pos"]',
                   "--set", "filter.max_positive_rank=none").output
    cfg = resolve_pipeline("default", ["judge.max_per_query=3", 'export.prompt="q: \\"x\\""',
                                       "index.retriever=bm25", 'filter.rules=["perc-pos"]',
                                       "filter.max_positive_rank=none"])
    assert cfg.judge.max_per_query == 3 and cfg.export.prompt == 'q: "x"' and cfg.index.retriever == "bm25"
    assert cfg.filter.rules == ["perc-pos"] and cfg.filter.max_positive_rank is None
    with pytest.raises(HardnegError, match="max_positive_rank is set but rule positive-rank is not in rules"):
        resolve_pipeline("default", ['filter.rules=["perc-pos"]'])
    (tmp_path / "shown.toml").write_text(shown)
    assert load_pipeline(tmp_path / "shown.toml") == cfg
    assert to_toml(cfg) in shown


@pytest.mark.parametrize("item,message", [
    ("nosection.x=1", "unknown section [nosection]"),
    ("filter.nokey=1", "unknown key 'nokey' in [filter]"),
    ("filter.ratio=abc", "ratio = 'abc' should be a float"),
    ("filter.ratio=none", "ratio = 'none' should be a float"),  # none unsets only keys that default to None
    ("filter.max_score=abc", "max_score = 'abc' should be a float"),
    ("mine.top_k=1.5", "top_k = 1.5 should be a int"),
    ("filter.rules=perc-pos", "rules = 'perc-pos' should be a list"),
    ("filter.ratio=2", "ratio = 2 must be in (0, 1]"),
    ("ratio=0.9", "expected section.key=value"),
])
def test_set_errors_name_the_key(item, message, tmp_path):
    for args in (("config", "show", "--set", item), ("run", tmp_path, "--out", tmp_path / "r", "--set", item)):
        result = invoke(*args, ok=False)
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_set_accepts_dashes_in_keys():
    assert resolve_pipeline("default", ["filter.negatives-per-query=2"]).filter.negatives_per_query == 2


def test_pyproject_packages_every_subpackage_and_the_configs():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "hardneg").rglob("__init__.py")}
    assert set(setuptools["packages"]) == found | {"hardneg.configs"}
    assert setuptools["package-dir"] == {"hardneg.configs": "configs"}
    assert setuptools["package-data"] == {"hardneg.configs": ["*.toml"]}
