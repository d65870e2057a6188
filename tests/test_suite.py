"""Suite files: expansion, exclusions, set rules, presets, kinds, filters and their errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from hpff_bench.config import HPFF_INFOPRO_LAMBDAS
from hpff_bench.runner.suite import Suite, SuiteError, load_suite

SUITES = Path(__file__).resolve().parents[1] / "suites"


def suite(text: str, name: str = "t") -> Suite:
    import tomllib

    return Suite(tomllib.loads(textwrap.dedent(text)), f"{name}.toml")


BASIC = """
[suite]
kinds = ["estimate"]
[base]
network = "resnet20"
[axes]
method = ["bp", "dgl"]
k = [2, 4]
"""


# ----- the shipped suites -----------------------------------------------------------------
def test_cifar10_suite_is_the_papers_grid():
    s = load_suite(SUITES / "cifar10.toml")
    plan = s.plan("paper")
    runs = {r.name: r for r in plan.runs}
    assert len(runs) == len(plan.runs)  # names are unique (they are file names)
    main = [r for r in plan.runs if r.grid == "main"]
    ks = {(r.config.network, r.config.k) for r in main if r.config.method not in ("bp", "man", "auglocal")}
    assert ks == {("resnet32", k) for k in (2, 4, 8, 16)} | {("resnet110", k) for k in (2, 4, 8, 16, 55)}
    # bp runs once per network (K=1); gc has no HPFF variant; local methods have both
    assert sorted(r.name for r in main if r.config.method == "bp") == ["resnet110-bp-k1", "resnet32-bp-k1"]
    for method in ("greedy", "dgl", "infopro"):
        for net, k in ks:
            assert f"{net}-{method}-k{k}" in runs and f"{net}-{method}-k{k}-hpff-n2" in runs
    assert not any(r.config.hilo for r in plan.runs if r.config.method in ("bp", "gc"))
    hp = runs["resnet32-infopro-k16-hpff-n2"].config
    assert (hp.hilo, hp.pff_grid, hp.aux, hp.local_loss, hp.lambdas) == (True, 2, "2c2f", "ce", HPFF_INFOPRO_LAMBDAS)
    assert runs["resnet32-infopro-k16"].config.aux == "1c2f"
    # PFF n in {1, 2, 4}; cascade on/off ablation on the HPFF split (15 modules for "K=16")
    pff = {(r.config.method, r.config.pff_grid) for r in plan.runs if r.config.hilo}
    assert {(m, n) for m in ("greedy", "dgl", "infopro") for n in (1, 2, 4)} <= pff
    abl = {r.facts["level"]: r.config for r in plan.runs if r.grid == "ablation" and r.config.method == "dgl"}
    assert set(abl) == {"IL", "CL", "IL+CL", "IL+PFF", "CL+PFF", "IL+CL+PFF"}
    assert {c.ablation for c in abl.values()} == {"IL", "CL", "IL+CL", "IL+PFF", "CL+PFF", "IL+CL+PFF"}
    assert all(c.split == "hpff" and c.k == 16 for c in abl.values())
    # every config is distinct; every kind present; gc and streamed PFF are not trained
    assert len({r.config.config_id() for r in plan.runs}) == len(plan.runs)
    train = [t for t in plan.tasks if t.kind == "train"]
    assert train and not any(t.config.method == "gc" or t.config.pff_exec == "streamed" for t in train)
    # epochs = "recipe": InfoPro's 160, HPFF's 400 for HiLo/HPFF runs (hpff_bench/recipes.toml)
    assert all((t.config.batch_size, t.config.lr) == (1024, 0.8) for t in train)
    assert all(t.options["epochs"] == (400 if t.config.hilo or t.config.method in ("man", "auglocal") else 160)
               for t in train)
    assert {t.result_options["epochs"] for t in train} == {160, 400}
    # InfoPro without HPFF: the paper's command for its K; with HPFF: HPFF's settings
    cfgs = {r.name: r.config for r in plan.runs}
    assert (cfgs["resnet32-infopro-k4"].local_loss, cfgs["resnet32-infopro-k4"].lambdas.ixx_1) == ("supcon", 6)
    assert cfgs["resnet32-infopro-k4-hpff-n2"].local_loss == "ce"
    # MAN and AugLocal: their papers' K only, no HPFF variant, their commands' settings
    new = {r.name: r.config for r in main if r.config.method in ("man", "auglocal")}
    assert set(new) == {f"{net}-{m}-k{k}" for net, k in (("resnet32", 16), ("resnet110", 55)) for m in ("man", "auglocal")}
    assert [new[f"{net}-auglocal-k{k}"].aux_net_depth for net, k in (("resnet32", 16), ("resnet110", 55))] == [2, 3]
    man = new["resnet32-man-k16"]
    assert (man.aux, man.local_loss, man.lambdas, man.man_momentum) == ("2c2f", "ce", HPFF_INFOPRO_LAMBDAS, 0.995)
    official = [r.config for r in plan.runs if r.grid == "official"]
    assert {(c.network, c.k, c.variant) for c in official} == {("resnet32", 16, "official"), ("resnet110", 55, "official")}
    assert {t.kind for t in plan.tasks} == {"estimate", "profile", "train"}


def test_cifar10_quick_preset_is_cpu_sized():
    plan = load_suite(SUITES / "cifar10.toml").plan("quick")
    est = [t for t in plan.tasks if t.kind == "estimate"]
    prof = [t for t in plan.tasks if t.kind == "profile"]
    train = [t for t in plan.tasks if t.kind == "train"]
    # estimates: all of resnet32; resnet110's bp and K=55 (the HPFF headline); streamed patches at n=2;
    # the decomposition's resnet110 K=55 steps but its streamed patches
    full = load_suite(SUITES / "cifar10.toml").plan("paper")
    r32 = {r.name for r in full.runs if r.config.network == "resnet32" and r.config.pff_grid != 4 or
           r.config.network == "resnet32" and r.config.pff_exec == "batched"}
    assert r32 <= {t.run.name for t in est}
    assert {t.run.name for t in est if t.config.network == "resnet110"} == {
        "resnet110-bp-k1", "resnet110-gc-k55", *(f"resnet110-{m}-k55{v}" for m in ("greedy", "dgl", "infopro")
                                                 for v in ("", "-hpff-n2")),
        "resnet110-infopro-k55-hpff-n2-official", "resnet110-man-k55", "resnet110-auglocal-k55",
        "resnet110-dgl-k55-hilo", *(f"resnet110-{m}-k55-r110-{step}" for m in ("infopro", "predsim")
                                          for step in ("base", "hilo", "pff-batched")),
        *(f"resnet110-{m}-k55-hilo-official" for m in ("dgl", "infopro", "predsim"))}
    assert 0 < len(prof) <= 10 and all(t.config.batch_size == 16 and t.config.device == "cpu" for t in prof)
    assert 0 < len(train) <= 10 and all(t.options["epochs"] == 1 and t.options["train_subset"] for t in train)
    assert plan.sweep_options["jobs"] == 2
    assert {t.config.batch_size for t in est} == {1024}


def test_hpff_k_counting_is_real_modules():
    plan = load_suite(SUITES / "cifar10.toml").plan()
    runs = {r.name: r.config for r in plan.runs}
    from hpff_bench.networks.splits import resolve_cuts

    c = runs["resnet110-dgl-k55-hpff-n2"]
    assert resolve_cuts(c.network, c.split, c.k).modules == 54  # HPFF's "K=55": the stem is folded in
    c = runs["resnet32-dgl-k16-hpff-split-IL"]
    assert resolve_cuts(c.network, c.split, c.k).modules == 15  # HPFF's resnet32 "K=16"
    c = runs["resnet32-dgl-k16"]
    assert resolve_cuts(c.network, c.split, c.k).modules == 16  # InfoPro's table


def test_smoke_suite_plan():
    plan = load_suite(SUITES / "smoke.toml").plan()
    assert [t.label for t in plan.tasks] == [
        f"{r}/{k}" for k in ("estimate", "profile", "train") for r in ("resnet20-bp-k1", "resnet20-dgl-k2-hpff-n2")
    ]
    assert all(t.config.dataset == "fake" and t.config.device == "cpu" for t in plan.tasks)


# ----- expansion rules -----------------------------------------------------------------------
def test_product_minus_exclusions_then_set_and_dedupe():
    s = suite(BASIC + """
    [[exclude]]
    method = "dgl"
    k = 4
    [[set]]
    where = { method = "bp" }
    k = 1
    """)
    plan = s.plan()
    assert [r.name for r in plan.runs] == ["resnet20-bp-k1", "resnet20-dgl-k2"]
    assert [t.label for t in plan.tasks] == ["resnet20-bp-k1/estimate", "resnet20-dgl-k2/estimate"]


def test_bundle_axis_and_name_tokens():
    s = suite("""
    [base]
    network = "resnet20"
    method = "dgl"
    k = 4
    [axes]
    seed = [0, 1]
    [[axes.level]]
    name = "IL"
    [[axes.level]]
    name = "CL"
    hilo = true
    independent = false
    """)
    names = [r.name for r in s.plan().runs]
    assert names == ["resnet20-dgl-k4-IL-s0", "resnet20-dgl-k4-CL-s0", "resnet20-dgl-k4-IL-s1", "resnet20-dgl-k4-CL-s1"]
    cl = s.plan(only="level=CL").runs
    assert {r.config.ablation for r in cl} == {"CL"}


def test_grids_union_and_presets():
    s = suite("""
    [base]
    network = "resnet20"
    [[grid]]
    name = "a"
    axes = { method = ["bp"] }
    [[grid]]
    name = "b"
    axes = { method = ["dgl", "greedy"], k = [2] }
    [kind.train]
    epochs = 3
    skip = [{ method = "greedy" }]
    [preset.small]
    grids = ["b"]
    axes = { method = ["dgl"] }
    kinds = ["train"]
    kind.train = { epochs = 1, batch_size = 128 }
    """)
    full = s.plan()
    assert [r.grid for r in full.runs] == ["a", "b", "b"]
    assert [t.label for t in full.tasks if t.kind == "train"] == ["resnet20-bp-k1/train", "resnet20-dgl-k2/train"]
    small = s.plan("small")
    assert [t.label for t in small.tasks] == ["resnet20-dgl-k2/train"]
    t = small.tasks[0]
    assert t.options == {"epochs": 1} and t.config.batch_size == 128
    assert t.config.lr == pytest.approx(0.1)  # no lr given: the recipe's, scaled to batch 128
    assert t.result_options["epochs"] == 1


def test_only_filter():
    s = suite(BASIC.replace('["estimate"]', '["estimate", "profile"]'))
    assert [t.label for t in s.plan(only="dgl-k4").tasks] == ["resnet20-dgl-k4/estimate", "resnet20-dgl-k4/profile"]
    assert [t.label for t in s.plan(only="method=bp,kind=profile").tasks] == [
        "resnet20-bp-k2/profile", "resnet20-bp-k4/profile"]
    assert len(s.plan(only="k=2|4,kind=estimate").tasks) == 4
    with pytest.raises(SuiteError, match="matches none"):
        s.plan(only="resnet110")
    with pytest.raises(SuiteError, match="unknown key 'methd'"):
        s.plan(only="methd=bp")


def test_hpff_axis_expands_like_the_cli_flag():
    s = suite("""
    [base]
    network = "resnet20"
    k = 4
    [axes]
    method = ["dgl", "infopro"]
    hpff = [true]
    pff_grid = [1, 4]
    """)
    cfgs = {r.name: r.config for r in s.plan().runs}
    assert set(cfgs) == {"resnet20-dgl-k4-hilo", "resnet20-dgl-k4-hpff-n4", "resnet20-infopro-k4-hilo",
                         "resnet20-infopro-k4-hpff-n4"}
    assert cfgs["resnet20-dgl-k4-hilo"].pff_grid == 1  # an explicit pff_grid wins over hpff's 2
    assert cfgs["resnet20-infopro-k4-hpff-n4"].lambdas == HPFF_INFOPRO_LAMBDAS


# ----- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,match",
    [
        (BASIC.replace("method =", "methd ="), "axis 'methd': unknown axis"),
        (BASIC.replace('["bp", "dgl"]', '["bp", "bpp"]'), "unknown --method 'bpp'"),
        (BASIC.replace("[2, 4]", '["2", "4"]'), "k = '2' is not an integer"),
        (BASIC.replace("[2, 4]", "[]"), "no values"),
        (BASIC + '[[exclude]]\nmethod = ["bp", "dgl"]\n', "has no runs"),
        (BASIC + '[[exclude]]\nmethd = "bp"\n', r"unknown key\(s\) \['methd'\]"),
        (BASIC.replace("[2, 4]", "[2, 99]"), "out of range for resnet20"),
        (BASIC + "[axes2]\n", r"unknown table\(s\) \['axes2'\]"),
        (BASIC.replace('kinds = ["estimate"]', 'kinds = ["estimat"]'), r"unknown kind\(s\)"),
        (BASIC + "[kind.train]\nepochz = 1\n", "unknown key 'epochz'"),
        (BASIC + '[base2]\n', "unknown table"),
        ("[suite]\nname = 'x'\n", "defines no runs"),
    ],
)
def test_errors_name_the_problem(text, match):
    with pytest.raises(SuiteError, match=match):
        suite(text).plan()


def test_invalid_combinations_are_all_reported_with_the_fix():
    s = suite("""
    [base]
    network = "resnet20"
    k = 2
    [axes]
    method = ["bp", "gc", "dgl"]
    hpff = [false, true]
    """)
    with pytest.raises(SuiteError) as e:
        s.plan()
    msg = str(e.value)
    assert "2 configuration(s) fail validation" in msg and "[[exclude]]" in msg
    assert "resnet20-bp-k2-hpff-n2" in msg and "resnet20-gc-k2-hpff-n2" in msg
    # declaratively excluded: fine
    fixed = suite(textwrap.dedent("""
    [base]
    network = "resnet20"
    k = 2
    [axes]
    method = ["bp", "gc", "dgl"]
    hpff = [false, true]
    [[exclude]]
    method = ["bp", "gc"]
    hpff = true
    """))
    assert len(fixed.plan().runs) == 4
    # or dropped and listed, for exploratory grids
    lax = suite("[suite]\non_invalid = \"exclude\"\n" + """
    [base]
    network = "resnet20"
    k = 2
    [axes]
    method = ["bp", "gc", "dgl"]
    hpff = [false, true]
    """)
    plan = lax.plan()
    assert len(plan.runs) == 4 and sum("excluded invalid" in n for n in plan.notes) == 2


def test_unknown_preset_and_preset_axis():
    s = suite(BASIC + '[preset.quick]\naxes = { network = ["resnet32"] }\n')
    with pytest.raises(SuiteError, match="unknown preset 'paper'; this suite has: quick"):
        s.plan("paper")
    with pytest.raises(SuiteError, match="unknown axis 'network'"):
        s.plan("quick")


def test_exclude_that_matches_nothing_is_noted():
    plan = suite(BASIC + '[[exclude]]\nmethod = "greedy"\n').plan()
    assert any("matched nothing" in n for n in plan.notes)


def _grid_suite(extra: str) -> Suite:
    import tomllib

    text = textwrap.dedent("""
        [suite]
        name = "s"
        [[grid]]
        name = "main"
        [grid.axes]
        method = ["bp"]
        [[grid]]
        name = "study"
        presets = ["study"]
        [grid.axes]
        method = ["dgl"]
        k = [2]
        [preset.study]
        name = "s-study"
        grids = ["study"]
    """) + textwrap.dedent(extra)
    return Suite(tomllib.loads(text), "s.toml")


def test_a_grid_named_for_presets_runs_only_under_them_into_the_presets_directory():
    s = _grid_suite("[preset.other]\n")
    assert {t.config.method for t in s.plan(None).tasks} == {"bp"}
    assert {t.config.method for t in s.plan("other").tasks} == {"bp"}
    study = s.plan("study")
    assert {t.config.method for t in study.tasks} == {"dgl"} and study.suite == "s-study"
    assert s.plan(None).suite == "s"


def test_a_grid_naming_an_unknown_preset_is_one_line():
    text = """
        [suite]
        name = "s"
        [[grid]]
        name = "g"
        presets = ["nope"]
        [grid.axes]
        method = ["bp"]
    """
    import tomllib

    with pytest.raises(SuiteError, match=r"grid 'g': presets = \['nope'\] must list presets of this suite \(none\)"):
        Suite(tomllib.loads(textwrap.dedent(text)), "s.toml").plan(None)
