"""Suites: TOML files that say which configurations to run, and how.

A suite file (Python's tomllib; see suites/cifar10.toml for a full example)::

    [suite]
    name = "cifar10"                 # results go to results/<name>/ (default: the file's stem)
    description = "..."
    kinds = ["estimate", "profile", "train"]   # what to run for every configuration
    on_invalid = "error"             # or "exclude": drop (and list) configs RunConfig rejects

    [base]                           # RunConfig fields every run starts from
    dataset = "cifar10"

    [axes]                           # one grid: the product of these values ...
    network = ["resnet32", "resnet110"]
    k = [2, 4, 8, 16, 55]
    method = ["bp", "gc", "greedy", "dgl", "infopro"]
    hpff = [false, true]

    [[exclude]]                      # ... minus every combination an exclude table matches
    network = "resnet32"
    k = 55

    [[exclude]]                      # (lists match any of their values)
    method = ["bp", "gc"]
    hpff = true

    [[set]]                          # then rules that change matching runs (duplicates,
    where = { method = "bp" }        # by config_id, are dropped: bp runs once, at K=1)
    k = 1

    [kind.profile]                   # per kind: RunConfig overrides, options, which runs
    batch_size = 1024
    only = [{ network = "resnet32" }]   # run this kind only for matching runs
    skip = [{ method = "gc" }]          # ... and never for these

    [preset.quick]                   # `--preset quick`: overrides applied before expansion
    axes = { network = ["resnet32"] }
    kind.train = { epochs = 1 }

Several grids: instead of `[axes]`, any number of `[[grid]]` tables, each with `name`, `axes`
and optionally its own `base`, `exclude` and `set`; the run set is their union (a config
that several grids produce runs once, under the first grid's name). Top-level `exclude`
and `set` apply to every grid.

Axes. An axis is a RunConfig field (network, method, k, split, batch_size, seed, hilo,
independent, pff_grid, ...), `hpff` (true = the CLI's --hpff: hilo, pff_grid 2 unless the
run sets pff_grid, and for InfoPro HPFF's loss settings: ce, 2c2f, ixx 5->0, ixy 0.5->0,
unless the run sets them), or a *bundle* axis: any other name whose values are tables of
fields with a `name`, e.g. `[[axes.level]] name = "CL"  hilo = true  independent = false`.

Matching (exclude, set.where, kind only/skip, presets' exclude, `--only key=value`): a table
of key = value or key = [values] (any of them); a run matches when every key matches. Keys:
RunConfig fields (the run's resolved value), `hpff`, bundle axis names (the bundle's name),
`grid` (the grid's name) and `name` (a glob on the run's name). `exclude` is matched before
`set` rules apply; everything else after. A key nothing could match is an error, so a typo
never silently keeps or drops runs.

Invalid combinations (a local-only option with bp, K above a network's range, a split
table without that K) must be excluded declaratively with `[[exclude]]`; every remaining
configuration goes through RunConfig.validate() before anything runs, and all failures are
reported together. `on_invalid = "exclude"` instead drops them and lists them in the plan's
notes (for exploratory grids).

A grid with `presets = ["NAME", ...]` runs only under those presets (not in the suite as
written): a study with its own schedule, such as cifar10.toml's accuracy proxy.

Presets (`[preset.NAME]`): `description`; `name` (results/<name>/ instead of the suite's);
`kinds` (replaces); `grids` (run only these grids);
`axes` (replaces the values of those axes in every grid that has them); `base` (merged);
`exclude` / `set` (added to the top-level ones); `kind.<kind>` (merged into `[kind.<kind>]`).

Kinds. `estimate` and `profile` take RunConfig overrides (batch_size, steps, warmup, device,
...); `train` also takes the trainer's options (epochs, warmup_epochs, train_subset,
test_subset, num_workers, augment, data_root, download). A train run without an explicit `lr` (in
[base], an axis, a [[set]] rule or [kind.train]) gets the recipe's lr scaled to its batch size (hpff_bench.runner.train.recipe_lr). Each kind
also takes `only`, `skip` and `timeout_s`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the `tomli` package
    import tomli as tomllib

from hpff_bench import validation as V
from hpff_bench.config import InfoProLambdas, RunConfig
from hpff_bench.errors import ConfigError

KIND_ORDER = ("estimate", "profile", "train")
TRAIN_KIND_OPTIONS = ("epochs", "warmup_epochs", "warmup_start_lr", "train_subset", "test_subset",
                      "num_workers", "augment", "data_root", "download", "eval_batch_size")
KIND_CONTROL = ("only", "skip", "timeout_s")
CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
_DEFAULTS = RunConfig()
# run-name token prefixes for fields that are not self-describing
_ABBREV = {"k": "k", "batch_size": "b", "seed": "s", "pff_grid": "pff", "cascade_span": "span",
           "image_size": "img", "num_classes": "c", "lr": "lr", "steps": "steps", "warmup": "wu"}


class SuiteError(ConfigError):
    """A suite file that cannot be turned into runs; the message names the file and the problem."""


@dataclass(frozen=True)
class Run:
    """One configuration of the suite (all kinds of it share the name and the results file)."""

    name: str
    config: RunConfig
    grid: str
    facts: dict = field(hash=False, compare=False)  # what match tables see
    given: frozenset = field(default=frozenset(), hash=False, compare=False)  # fields the suite set


@dataclass(frozen=True)
class Task:
    """One (run, kind): what a worker executes and what one result record describes."""

    run: Run
    kind: str
    config: RunConfig  # the run's config with the kind's overrides
    options: dict = field(hash=False, compare=False)  # kind options (train: epochs, ...)
    result_options: dict = field(hash=False, compare=False)  # the ones that change the result
    timeout_s: float | None = None

    @property
    def label(self) -> str:
        return f"{self.run.name}/{self.kind}"

    @property
    def key(self) -> tuple[str, str, str]:
        from hpff_bench.runner.store import options_key

        return (self.kind, self.config.config_id(), options_key(self.result_options))


@dataclass
class Plan:
    suite: str
    preset: str | None
    runs: list[Run]
    tasks: list[Task]
    notes: list[str] = field(default_factory=list)
    sweep_options: dict = field(default_factory=dict)


# ----- small helpers ---------------------------------------------------------------------------
def _as_list(v) -> list:
    return list(v) if isinstance(v, list) else [v]


def _check_type(where: str, name: str, value) -> None:
    """The value's type fits RunConfig field `name` (SuiteError otherwise)."""
    if name == "hpff":
        ok, what = isinstance(value, bool), "true or false"
    elif name == "lambdas":
        ok, what = isinstance(value, dict), "a table {ixx_1, ixy_1, ixx_2, ixy_2}"
        if ok:
            unknown = set(value) - {f.name for f in dataclasses.fields(InfoProLambdas)}
            if unknown:
                raise SuiteError(f"{where}: lambdas: unknown key(s) {sorted(unknown)}; allowed: ixx_1, ixy_1, ixx_2, ixy_2")
    else:
        default = getattr(_DEFAULTS, name)
        if isinstance(default, bool):
            ok, what = isinstance(value, bool), "true or false"
        elif name in ("image_size", "num_classes"):
            ok, what = value is None or (isinstance(value, int) and not isinstance(value, bool)), "an integer"
        elif isinstance(default, int):
            ok, what = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif isinstance(default, float):
            ok, what = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        elif isinstance(default, str):
            ok, what = isinstance(value, str), "a string"
        else:
            ok, what = True, ""
    if not ok:
        raise SuiteError(f"{where}: {name} = {value!r} is not {what}")


def resolve_fields(fields: dict) -> dict:
    """RunConfig keyword arguments from suite fields (expands `hpff`, builds `lambdas`)."""
    d = dict(fields)
    if isinstance(d.get("cuts"), str) and d["cuts"].strip() and "k" not in d:
        d["k"] = len(d["cuts"].split(",")) + 1  # as on the command line: K follows the cuts
    hpff = d.pop("hpff", False)
    if hpff:
        d["hilo"] = True
        d.setdefault("pff_grid", 2)
    where = (d.get("dataset", _DEFAULTS.dataset), d.get("network", _DEFAULTS.network), d.get("k", _DEFAULTS.k))
    if d.get("method") in ("infopro", "man"):  # unset aux / local_loss / lambdas: the paper's recipe
        from hpff_bench.recipes import infopro_defaults, man_momentum

        r = infopro_defaults(*where, hpff, d["method"])
        d.setdefault("aux", r["aux"])
        d.setdefault("local_loss", r["local_loss"])
        d.setdefault("lambdas", dataclasses.asdict(r["lambdas"]))
        if d["method"] == "man":
            d.setdefault("man_momentum", man_momentum())
    if d.get("method") == "auglocal":  # unset depth / pyramid: its command's
        from hpff_bench.recipes import auglocal_defaults

        for name, value in auglocal_defaults(*where).items():
            d.setdefault(name, value)
    if isinstance(d.get("lambdas"), dict):
        d["lambdas"] = InfoProLambdas(**d["lambdas"])
    return d


def _token(name: str, value) -> str:
    if name in ("network", "method"):
        return str(value)
    if name == "hpff":
        return "hpff" if value else ""
    if name == "split":
        return f"{value}-split"
    if isinstance(value, bool):
        return name.replace("_", "-") if value else f"no-{name.replace('_', '-')}"
    if name in _ABBREV:
        return f"{_ABBREV[name]}{value}"
    return f"{name.replace('_', '-')}-{value}"


def config_name_tokens(cfg: RunConfig, variant: bool = True) -> list[str]:
    """[network, method, kK, (split), (variant)]: hilo, hpff-nN, pff-nN; -cl = no independent level."""
    tokens = [cfg.network, cfg.method, f"k{cfg.k}"]
    if cfg.split != "auto":
        tokens.append(f"{cfg.split}-split")
    if cfg.cuts:
        tokens.append("cuts-" + cfg.cuts.replace(",", "-"))
    if not variant:
        return tokens
    if cfg.hilo:
        t = f"hpff-n{cfg.pff_grid}" if cfg.pff_grid > 1 else "hilo"
        tokens.append(t if cfg.independent else f"{t}-cl")
    elif cfg.pff_grid > 1:
        tokens.append(f"pff-n{cfg.pff_grid}")
    if cfg.pff_grid > 1 and cfg.pff_exec != "batched":
        tokens.append(cfg.pff_exec)
    if cfg.variant != "ours":
        tokens.append(cfg.variant)
    return tokens


def config_run_name(cfg: RunConfig) -> str:
    """A readable name for a single run outside a suite, e.g. resnet32-dgl-k16-hpff-n2-cifar10."""
    from hpff_bench.runner.store import safe_name

    return safe_name("-".join([*config_name_tokens(cfg), cfg.dataset]))


# ----- matching --------------------------------------------------------------------------------
class Matcher:
    """A match table (see the module docstring), checked against the keys it may use."""

    def __init__(self, table: dict, where: str, known_keys: set[str]):
        if not isinstance(table, dict) or not table:
            raise SuiteError(f"{where}: a match table must be a non-empty table of key = value(s)")
        unknown = sorted(set(table) - known_keys)
        if unknown:
            raise SuiteError(
                f"{where}: unknown key(s) {unknown}; match keys are RunConfig fields, axes "
                f"({', '.join(sorted(known_keys - set(CONFIG_FIELDS)))})"
            )
        self.table = {k: _as_list(v) for k, v in table.items()}
        self.where = where
        self.hits = 0

    def __call__(self, facts: dict) -> bool:
        for key, values in self.table.items():
            if key == "name":
                if not any(fnmatch.fnmatchcase(facts["name"], str(v)) for v in values):
                    return False
                continue
            have = facts.get(key)
            if not any(_same(have, v) for v in values):
                return False
        self.hits += 1
        return True


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (isinstance(a, bool) and isinstance(b, bool) and a == b)
    if dataclasses.is_dataclass(a) and isinstance(b, dict):
        return dataclasses.asdict(a) == b
    return a == b


def parse_filter(text: str) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """`--only` syntax: comma-separated terms; `key=v1|v2` compares a fact (or `kind`) as text,
    any other term is a glob (or substring) of the run name. All terms must match."""
    pairs, globs = [], []
    for term in filter(None, (t.strip() for t in text.split(","))):
        if "=" in term:
            k, v = term.split("=", 1)
            pairs.append((k.strip(), v.split("|")))
        else:
            globs.append(term if any(c in term for c in "*?[") else f"*{term}*")
    return pairs, globs


def _fact_text(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


def _results_name(name, where: str) -> str:
    """results/<name>/ (the suite's name, or a preset's own): sanitised like run names, so "../x"
    or "/abs" never leave --results."""
    from hpff_bench.runner.store import safe_name

    if not isinstance(name, str) or not name.strip():
        raise SuiteError(f"{where} name must be a non-empty string, got {name!r}")
    return safe_name(name)


# ----- the file's shape ------------------------------------------------------------------------
def _shown(value) -> str:
    return V.shown(value, 40)


def _table(where: str, value) -> dict:
    if not isinstance(value, dict):
        raise SuiteError(f"{where} must be a table, got {_shown(value)}")
    return value


def _tables(where: str, value) -> list[dict]:
    """A table or an array of tables (`[[exclude]]`, `only = [{...}]`)."""
    for v in _as_list(value):
        if not isinstance(v, dict):
            raise SuiteError(f"{where} must be a table or an array of tables, got {_shown(value)}")
    return _as_list(value)


def _texts(where: str, value) -> None:
    """A string or an array of strings (`kinds`, `grids`)."""
    if not all(isinstance(v, str) for v in _as_list(value)):
        raise SuiteError(f"{where} must be a string or an array of strings, got {_shown(value)}")


def _text(where: str, value) -> None:
    if not isinstance(value, str):
        raise SuiteError(f"{where} must be a string, got {_shown(value)}")


def _check_axes(where: str, axes) -> None:
    """An axes table: axis -> a value or an array of values; a bundle value's `name` is text."""
    for axis, values in _table(where, axes).items():
        for v in _as_list(values):
            if isinstance(v, dict) and "name" in v:
                _text(f"{where} {axis}: a bundle's name", v["name"])


def _check_kinds(where: str, kinds) -> None:
    for kind, table in _table(where, kinds).items():
        table = _table(f"{where}.{kind}", table)
        for key in ("only", "skip"):
            if key in table:
                _tables(f"{where}.{kind} {key}", table[key])


def _check_rules(where: str, data: dict) -> None:
    """`exclude` (tables) and `set` (tables with a `where` table) of the top level, a grid or a preset."""
    if "exclude" in data:
        _tables(f"{where}exclude", data["exclude"])
    for rule in _tables(f"{where}set", data["set"]) if "set" in data else ():
        if "where" in rule:
            _table(f"{where}set where", rule["where"])


def check_shape(data: dict, path: Path) -> None:
    """Every table of the file is a table, every name text, before any field is read: a file
    of the wrong shape (`suite = 5`) is one SuiteError line naming the key, never a TypeError."""
    w = f"{path}: "
    top = set(data) - {"suite", "base", "axes", "grid", "exclude", "set", "kind", "preset"}
    if top:
        raise SuiteError(f"{w}unknown table(s) {sorted(top)}; allowed: suite, base, axes, grid, exclude, set, kind, preset")
    meta = _table(f"{w}[suite]", data.get("suite", {}))
    unknown_meta = set(meta) - {"name", "description", "kinds", "on_invalid", "jobs", "timeout_s"}
    if unknown_meta:
        raise SuiteError(f"{w}[suite]: unknown key(s) {sorted(unknown_meta)}")
    if "kinds" in meta:
        _texts(f"{w}[suite] kinds", meta["kinds"])
    for key in ("base", "axes", "kind", "preset"):
        if key in data:
            _table(f"{w}[{key}]", data[key])
    if "axes" in data:
        _check_axes(f"{w}[axes]", data["axes"])
    _check_kinds(f"{w}[kind]", data.get("kind", {}))
    _check_rules(w, data)
    for i, g in enumerate(_tables(f"{w}[[grid]]", data["grid"]) if "grid" in data else ()):
        gw = f"{w}[[grid]] #{i + 1}"
        if "name" in g:
            _text(f"{gw} name", g["name"])
        for key in ("axes", "base"):
            if key in g:
                _table(f"{gw} {key}", g[key])
        if "axes" in g:
            _check_axes(f"{gw} axes", g["axes"])
        _check_rules(f"{gw} ", g)
    for name, p in data.get("preset", {}).items():
        pw = f"{w}[preset.{name}]"
        p = _table(pw, p)
        if "kinds" in p:
            _texts(f"{pw} kinds", p["kinds"])
        if "grids" in p:
            _texts(f"{pw} grids", p["grids"])
        for key in ("axes", "base", "kind"):
            if key in p:
                _table(f"{pw} {key}", p[key])
        if "axes" in p:
            _check_axes(f"{pw} axes", p["axes"])
        _check_kinds(f"{pw} kind", p.get("kind", {}))
        _check_rules(f"{pw} ", p)


# ----- the suite -------------------------------------------------------------------------------
class Suite:
    def __init__(self, data: dict, path: str | Path = "<suite>"):
        self.path = Path(path)
        self.data = data
        check_shape(data, self.path)
        meta = data.get("suite", {})
        self.name = _results_name(meta.get("name", self.path.stem), f"{self.path}: [suite]")
        self.description = meta.get("description", "")
        if not isinstance(self.description, str):
            raise SuiteError(f"{self.path}: [suite] description must be a string, got {self.description!r}")
        self.presets: dict[str, dict] = data.get("preset", {})
        if "axes" in data and "grid" in data:
            raise SuiteError(f"{self.path}: use either [axes] (one grid) or [[grid]] tables, not both")
        if "axes" not in data and "grid" not in data:
            raise SuiteError(f"{self.path}: no [axes] and no [[grid]]: the suite defines no runs")

    @classmethod
    def load(cls, path: str | Path) -> Suite:
        path = Path(path)
        if not path.exists():
            # `hpff-bench sweep cifar10` finds suites/cifar10.toml
            alt = Path("suites") / (path.name if path.suffix == ".toml" else f"{path.name}.toml")
            if alt.exists():
                path = alt
            else:
                raise SuiteError(f"{path}: no such suite file")
        if path.is_dir():
            raise SuiteError(f"{path}: is a directory; give a suite file (suites/NAME.toml)")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise SuiteError(f"{path}: not a text file (not UTF-8); a suite is a TOML file") from None
        except OSError as e:
            raise SuiteError(f"{path}: cannot read ({e.strerror})") from None
        except tomllib.TOMLDecodeError as e:
            raise SuiteError(f"{path}: not valid TOML: {e}") from e
        return cls(data, path)

    # ----- presets ---------------------------------------------------------------------------
    def _apply_preset(self, preset: str | None) -> dict:
        """The suite's data with `preset` applied."""
        data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.data.items()}
        data["suite"] = dict(data.get("suite", {}))
        grids = self._grids_for(data, preset)
        if preset is None:
            if "grid" in data:
                data["grid"] = grids
            return data
        if preset not in self.presets:
            have = ", ".join(sorted(self.presets)) or "none"
            raise SuiteError(f"{self.path}: unknown preset {preset!r}; this suite has: {have}")
        p = self.presets[preset]
        allowed = {"description", "name", "kinds", "grids", "axes", "base", "exclude", "set", "kind", "jobs", "timeout_s"}
        unknown = set(p) - allowed
        if unknown:
            raise SuiteError(f"{self.path}: [preset.{preset}]: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        for key in ("name", "kinds", "jobs", "timeout_s"):
            if key in p:
                data["suite"][key] = p[key]
        if "grids" in p:
            names = [g["name"] for g in grids]
            missing = sorted(set(p["grids"]) - set(names))
            if missing:
                raise SuiteError(f"{self.path}: [preset.{preset}] grids: unknown grid(s) {missing}; the suite has {names}")
            grids = [g for g in grids if g["name"] in p["grids"]]
        for axis, values in p.get("axes", {}).items():
            hit = False
            for g in grids:
                if axis in g["axes"]:
                    g["axes"][axis] = values
                    hit = True
            if not hit:
                raise SuiteError(f"{self.path}: [preset.{preset}] axes: unknown axis {axis!r} (no grid has it)")
        data.pop("axes", None)
        data["grid"] = grids
        data["base"] = {**data.get("base", {}), **p.get("base", {})}
        data["exclude"] = _as_list(data.get("exclude", [])) + _as_list(p.get("exclude", []))
        data["set"] = _as_list(data.get("set", [])) + _as_list(p.get("set", []))
        kinds = {k: dict(v) for k, v in data.get("kind", {}).items()}
        for k, v in p.get("kind", {}).items():
            kinds[k] = {**kinds.get(k, {}), **v}
        data["kind"] = kinds
        return data

    def _grids_for(self, data: dict, preset: str | None) -> list[dict]:
        """The grids that run under `preset`: a grid with `presets = [...]` runs only under those
        (a study such as the accuracy proxy, which is not part of the suite as written)."""
        grids = []
        for g in self._grids(data):
            only = g.get("presets")
            if only is None:
                grids.append(g)
                continue
            names = _as_list(only)
            bad = [n for n in names if not isinstance(n, str) or n not in self.presets]
            if not names or bad:
                have = ", ".join(sorted(self.presets)) or "none"
                raise SuiteError(f"{self.path}: grid {g['name']!r}: presets = {only!r} must list presets of "
                                 f"this suite ({have})")
            if preset in names:
                grids.append(g)
        return grids

    @staticmethod
    def _grids(data: dict) -> list[dict]:
        if "axes" in data:
            return [{"name": "main", "axes": dict(data["axes"])}]
        grids = []
        for i, g in enumerate(_as_list(data["grid"])):
            g = dict(g)
            g.setdefault("name", f"grid{i}")
            g["axes"] = dict(g.get("axes", {}))
            grids.append(g)
        return grids

    # ----- expansion -------------------------------------------------------------------------
    def plan(self, preset: str | None = None, only: str | None = None) -> Plan:
        """Every task of the suite (with `preset` and the `--only` filter), validated."""
        data = self._apply_preset(preset)
        meta = data["suite"]
        where0 = f"{self.path}" + (f" (preset {preset})" if preset else "")
        kinds = _as_list(meta.get("kinds", list(KIND_ORDER)))
        if not kinds:
            raise SuiteError(f"{where0}: kinds = [] runs nothing; list at least one of {', '.join(KIND_ORDER)}")
        bad = [k for k in kinds if k not in KIND_ORDER]
        if bad:
            raise SuiteError(f"{where0}: unknown kind(s) {bad}; allowed: {', '.join(KIND_ORDER)}")
        try:
            V.integer("[suite] jobs", meta.get("jobs"), low=1, allow_none=True)
            V.number("[suite] timeout_s", meta.get("timeout_s"), low=0, low_open=True, high=V.MAX_SECONDS, allow_none=True)
        except ConfigError as e:
            raise SuiteError(f"{where0}: {e}") from None
        on_invalid = meta.get("on_invalid", "error")
        if on_invalid not in ("error", "exclude"):
            raise SuiteError(f"{where0}: on_invalid must be 'error' or 'exclude', got {on_invalid!r}")
        grids = self._grids(data)
        base = data.get("base", {})
        for key, value in base.items():
            self._check_field(f"{where0}: [base]", key, value)

        # every axis of every grid, to know which match keys exist
        bundle_axes: set[str] = set()
        for g in grids:
            for axis, values in g["axes"].items():
                where = f"{where0}: grid {g['name']!r}: axis {axis!r}"
                values = _as_list(values)
                if not values:
                    raise SuiteError(f"{where}: no values (an empty axis makes the product empty)")
                if all(isinstance(v, dict) for v in values):
                    if axis in CONFIG_FIELDS or axis == "hpff":
                        raise SuiteError(f"{where}: a bundle axis cannot be named like the field {axis!r}; rename it")
                    bundle_axes.add(axis)
                    for v in values:
                        if "name" not in v:
                            raise SuiteError(f"{where}: every value of a bundle axis needs a `name`")
                        for key, val in v.items():
                            if key != "name":
                                self._check_field(f"{where} value {v['name']!r}", key, val)
                elif axis in CONFIG_FIELDS or axis == "hpff":
                    for v in values:
                        _check_type(where, axis, v)
                else:
                    raise SuiteError(
                        f"{where}: unknown axis; axes are RunConfig fields ({', '.join(CONFIG_FIELDS)}), "
                        "`hpff`, or bundle axes whose values are tables with a `name`"
                    )
        known = set(CONFIG_FIELDS) | {"hpff", "grid", "name"} | bundle_axes
        global_ex = [Matcher(t, f"{where0}: [[exclude]] #{i + 1}", known) for i, t in enumerate(_as_list(data.get("exclude", [])))]
        global_set = [self._set_rule(t, f"{where0}: [[set]] #{i + 1}", known) for i, t in enumerate(_as_list(data.get("set", [])))]

        runs: list[Run] = []
        seen: dict[str, str] = {}  # config_id -> run name
        notes: list[str] = []
        invalid: list[str] = []
        for g in grids:
            gw = f"{where0}: grid {g['name']!r}"
            unknown = set(g) - {"name", "axes", "base", "exclude", "set", "description", "presets"}
            if unknown:
                raise SuiteError(f"{gw}: unknown key(s) {sorted(unknown)}")
            gbase = {**base, **g.get("base", {})}
            for key, value in g.get("base", {}).items():
                self._check_field(f"{gw}: base", key, value)
            excludes = global_ex + [Matcher(t, f"{gw}: exclude #{i + 1}", known) for i, t in enumerate(_as_list(g.get("exclude", [])))]
            sets = global_set + [self._set_rule(t, f"{gw}: set #{i + 1}", known) for i, t in enumerate(_as_list(g.get("set", [])))]
            axes = list(g["axes"].items())
            varying = {a for a, vs in axes if len(_as_list(vs)) > 1}
            for combo in itertools.product(*(_as_list(vs) for _, vs in axes)):
                fields = dict(gbase)
                facts: dict = {"grid": g["name"]}
                bundles: list[tuple[str, str]] = []
                for (axis, _), value in zip(axes, combo):
                    if axis in bundle_axes and isinstance(value, dict):
                        fields.update({k: v for k, v in value.items() if k != "name"})
                        facts[axis] = value["name"]
                        bundles.append((axis, value["name"]))
                    else:
                        fields[axis] = value
                pre = {**self._facts(fields), **facts}
                pre["name"] = ""
                if any(m(pre) for m in excludes):
                    continue
                for where_m, changes in sets:
                    if where_m({**self._facts(fields), **facts, "name": ""}):
                        fields.update(changes)
                facts.update(self._facts(fields))
                try:
                    cfg = RunConfig(**resolve_fields(fields))
                except TypeError as e:
                    raise SuiteError(f"{gw}: {e}") from e
                name = self._run_name(cfg, fields, axes, varying, bundles)
                facts["name"] = name
                try:
                    cfg.validate()
                except ConfigError as e:
                    if on_invalid == "exclude":
                        notes.append(f"excluded invalid {name}: {e}")
                        continue
                    invalid.append(f"{name}: {e}")
                    continue
                cid = cfg.config_id()
                if cid in seen:
                    continue  # the same configuration from another combination or grid
                seen[cid] = name
                runs.append(Run(name, cfg, g["name"], facts, frozenset(fields)))
            for m in excludes[len(global_ex):]:
                if not m.hits:
                    notes.append(f"{m.where} matched nothing")
        if invalid:
            more = f"; and {len(invalid) - 3} more" if len(invalid) > 3 else ""
            raise SuiteError(  # one line: the CLI's rule for every error
                f"{where0}: {len(invalid)} configuration(s) fail validation; exclude them with "
                "[[exclude]] tables (or set on_invalid = \"exclude\"): " + "; ".join(invalid[:3]) + more
            )
        for m in global_ex:
            if not m.hits:
                notes.append(f"{m.where} matched nothing")
        # unique names (two configs that differ only in a non-axis way get the config_id appended)
        counts: dict[str, int] = {}
        for r in runs:
            counts[r.name] = counts.get(r.name, 0) + 1
        runs = [
            dataclasses.replace(r, name=f"{r.name}-{r.config.config_id()[:8]}", facts={**r.facts, "name": f"{r.name}-{r.config.config_id()[:8]}"})
            if counts[r.name] > 1 else r
            for r in runs
        ]
        if not runs:
            raise SuiteError(f"{where0}: the suite has no runs: every combination of its axes is excluded")

        tasks = self._tasks(runs, kinds, data.get("kind", {}), known, where0)
        if only:
            tasks = self._filter(tasks, only, known, where0)
        runs_left = {t.run.name for t in tasks}
        runs = [r for r in runs if r.name in runs_left]
        sweep_options = {k: meta[k] for k in ("jobs", "timeout_s") if k in meta}
        return Plan(_results_name(meta.get("name", self.name), where0), preset, runs, tasks, notes, sweep_options)

    def _check_field(self, where: str, key: str, value) -> None:
        if key not in CONFIG_FIELDS and key != "hpff":
            raise SuiteError(f"{where}: unknown field {key!r}; fields are RunConfig's ({', '.join(CONFIG_FIELDS)}) and hpff")
        _check_type(where, key, value)

    def _set_rule(self, table: dict, where: str, known: set[str]):
        table = dict(table)
        if "where" not in table:
            raise SuiteError(f"{where}: a set rule needs `where = {{...}}` and the fields to set")
        m = Matcher(table.pop("where"), where + " where", known)
        if not table:
            raise SuiteError(f"{where}: sets nothing")
        for key, value in table.items():
            self._check_field(where, key, value)
        return m, table

    @staticmethod
    def _facts(fields: dict) -> dict:
        """Match facts: resolved RunConfig values (with their defaults) and `hpff`."""
        resolved = resolve_fields(fields)
        facts = {name: getattr(_DEFAULTS, name) for name in CONFIG_FIELDS}
        facts.update(resolved)
        facts["hpff"] = bool(fields.get("hpff", False))
        return facts

    @staticmethod
    def _run_name(cfg: RunConfig, fields: dict, axes, varying: set[str], bundles) -> str:
        """network-method-kK[-split][-variant][-other varying axes], e.g. resnet32-dgl-k16-hpff-n2.

        The variant comes from the config (hilo, hpff-nN, pff-nN, -cl without the independent
        level) unless a bundle axis varies in the grid, whose value names replace it."""
        from hpff_bench.runner.store import safe_name

        varying_bundles = [name for axis, name in bundles if axis in varying]
        tokens = config_name_tokens(cfg, variant=not varying_bundles) + varying_bundles
        described = {"network", "method", "k", "split", "hpff", "hilo", "pff_grid", "independent"}
        if not varying_bundles:
            described.add("pff_exec")
        for axis, _ in axes:
            if axis in varying and axis not in described and axis in CONFIG_FIELDS:
                tokens.append(_token(axis, fields.get(axis)))
        return safe_name("-".join(t for t in tokens if t))

    def _tasks(self, runs: list[Run], kinds: list[str], kind_tables: dict, known: set[str], where0: str) -> list[Task]:
        from hpff_bench.runner.train import TrainOptions, recipe_lr

        unknown_kinds = set(kind_tables) - set(KIND_ORDER)
        if unknown_kinds:
            raise SuiteError(f"{where0}: [kind.*]: unknown kind(s) {sorted(unknown_kinds)}; allowed: {', '.join(KIND_ORDER)}")
        tasks: list[Task] = []
        for kind in KIND_ORDER:  # every kind table is checked, run or not
            table = dict(kind_tables.get(kind, {}))
            kw = f"{where0}: [kind.{kind}]"
            only = [Matcher(t, f"{kw} only", known) for t in _as_list(table.pop("only", []))]
            skip = [Matcher(t, f"{kw} skip", known) for t in _as_list(table.pop("skip", []))]
            timeout = table.pop("timeout_s", None)
            try:
                V.number("timeout_s", timeout, low=0, low_open=True, high=V.MAX_SECONDS, allow_none=True)
            except ConfigError as e:
                raise SuiteError(f"{kw}: {e}") from None
            overrides, options = {}, {}
            for key, value in table.items():
                if kind == "train" and key in TRAIN_KIND_OPTIONS:
                    options[key] = value
                elif key in CONFIG_FIELDS:
                    _check_type(kw, key, value)
                    overrides[key] = value
                else:
                    allowed = list(CONFIG_FIELDS) + (list(TRAIN_KIND_OPTIONS) if kind == "train" else []) + list(KIND_CONTROL)
                    raise SuiteError(f"{kw}: unknown key {key!r}; allowed: {', '.join(allowed)}")
            result_options: dict = {}
            # epochs = "recipe": each run trains as long as its paper did (InfoPro 160, HPFF 400)
            by_recipe = kind == "train" and options.get("epochs") == "recipe"
            if kind == "train":
                try:
                    topts = TrainOptions(**{**options, "epochs": 400} if by_recipe else options).validate()
                except (TypeError, ConfigError) as e:
                    raise SuiteError(f"{kw}: {e}") from e
                result_options = topts.result_options()
            if kind not in kinds:
                continue
            for run in runs:
                if only and not any(m(run.facts) for m in only):
                    continue
                if any(m(run.facts) for m in skip):
                    continue
                changes = dict(overrides)
                if kind == "train" and "lr" not in changes and "lr" not in run.given:
                    changes["lr"] = recipe_lr(run.config.dataset, changes.get("batch_size", run.config.batch_size))
                cfg = run.config.replace(**{k: (InfoProLambdas(**v) if k == "lambdas" else v) for k, v in changes.items()})
                try:
                    cfg.validate()
                except ConfigError as e:
                    raise SuiteError(f"{kw}: run {run.name}: {e}") from e
                run_options, run_results = dict(options), result_options
                if by_recipe:
                    from hpff_bench.recipes import recipe_epochs

                    run_options["epochs"] = recipe_epochs(cfg)
                    run_results = TrainOptions(**run_options).validate().result_options()
                tasks.append(Task(run, kind, cfg, run_options, run_results, timeout or None))
        return tasks

    def _filter(self, tasks: list[Task], only: str, known: set[str], where0: str) -> list[Task]:
        pairs, globs = parse_filter(only)
        for key, _ in pairs:
            if key not in known and key != "kind":
                raise SuiteError(f"--only {only!r}: unknown key {key!r}; use RunConfig fields, axes, grid, name or kind")
        out = []
        for t in tasks:
            facts = {**t.run.facts, "kind": t.kind}
            if all(_fact_text(facts.get(k)) in vs for k, vs in pairs) and all(
                fnmatch.fnmatchcase(t.run.name, g) or fnmatch.fnmatchcase(t.label, g) for g in globs
            ):
                out.append(t)
        if not out:
            raise SuiteError(f"{where0}: --only {only!r} matches none of the suite's {len(tasks)} run(s)")
        return out


def load_suite(path: str | Path) -> Suite:
    return Suite.load(path)
