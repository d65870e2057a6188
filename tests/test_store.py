"""The results store: records, the locked appender, the loader, schema upgrades."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from hpff_bench.config import RunConfig
from hpff_bench.runner import store
from hpff_bench.runner.env import capture_env


def profile_like(**kw) -> dict:
    """What hpff_bench.profiling.profile_config returns (INTERFACES.md 'profile record')."""
    cfg = RunConfig(network="resnet32", method="dgl", k=4, batch_size=128)
    d = {
        "label": cfg.label, "ablation": cfg.ablation, "config": cfg.to_dict(), "modules": 4,
        "params": 470_000, "device": "cuda:0", "forward_calls": 4, "peak_memory_bytes": 123_456_789,
        "memory_source": "cuda-allocator", "step_seconds": 0.05, "images_per_second": 2560.0,
        "memory": {"peak_allocated_bytes": 123_456_789, "peak_reserved_bytes": 140_000_000,
                   "breakdown_bytes": {"parameters": 1_900_000, "other": 5}},
        "predicted": {"peak_allocated_bytes": 120_000_000, "terms": {"context": 1}},
    }
    d.update(kw)
    return d


def test_record_has_every_schema_key_and_derives_from_the_config():
    cfg = RunConfig(network="resnet32", method="infopro", k=16, hilo=True, pff_grid=2, aux="2c2f")
    rec = store.make_record("profile", "ok", config=cfg, suite="s", run_name="r", env=capture_env(),
                            memory={"peak_allocated_bytes": 1}, options={"epochs": 3})
    assert set(store.RECORD_KEYS) <= set(rec)
    assert rec["schema"] == store.SCHEMA_VERSION == 1
    assert rec["config_id"] == cfg.config_id() and rec["label"] == "InfoPro+HPFF (n=2)"
    assert rec["ablation"] == "IL+CL+PFF" and rec["accuracy"] is None
    assert {"torch", "cuda", "cudnn", "driver", "device_name", "cpu", "python", "git_commit", "time",
            "hostname"} <= set(rec["env"])
    assert store.task_key(rec) == ("profile", cfg.config_id(), store.options_key({"epochs": 3}))
    with pytest.raises(store.StoreError):
        store.make_record("profile", "finished")
    with pytest.raises(store.StoreError):
        store.make_record("bench", "ok")


def test_round_trip_through_the_loader(tmp_path):
    cfg = RunConfig(network="resnet20", method="bp")
    recs = [
        store.make_record("train", "ok", config=cfg, run_name="a", accuracy={"top1": 0.9, "per_epoch": [{"epoch": 1}]},
                          timing={"step_seconds": 0.1, "images_per_second": 640.0, "steps": 3}),
        store.make_record("profile", "oom", config=cfg.replace(batch_size=4096), run_name="a",
                          message="out of memory at batch size 4096"),
        store.make_record("estimate", "ok", config=cfg, run_name="a", predicted={"peak_allocated_bytes": float("nan")}),
    ]
    path = store.run_file(tmp_path / "suite", "a/b c")
    assert path.name == "a_b_c.jsonl"
    for r in recs:
        store.append_record(path, r)
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(ln)["schema"] == 1 for ln in lines)
    back = store.read_records(tmp_path).records
    assert [r["run_id"] for r in back] == [r["run_id"] for r in recs]
    assert back[0]["accuracy"] == recs[0]["accuracy"] and back[0]["config"] == cfg.to_dict()
    assert back[2]["predicted"]["peak_allocated_bytes"] is None  # NaN is stored as null: strict JSON
    frame = store.load_results(tmp_path)
    assert len(frame) == 3
    for col in ("accuracy.top1", "timing.step_seconds", "config.network", "config.lambdas.ixx_1", "status",
                "kind", "config_id", "_file", "_line", "memory", "predicted.peak_allocated_bytes"):
        assert col in frame.columns, col
    assert list(frame["status"]) == ["ok", "oom", "ok"]
    assert frame.loc[0, "accuracy.top1"] == 0.9 and frame.loc[1, "config.batch_size"] == 4096
    assert store.finished_keys(tmp_path / "suite") == {store.task_key(recs[0]), store.task_key(recs[2])}


def test_a_line_cut_short_is_skipped_and_never_glued_to(tmp_path):
    path = tmp_path / "r.jsonl"
    ok = store.make_record("estimate", "ok", run_name="r")
    store.append_record(path, ok)
    with open(path, "a") as f:
        f.write('{"schema": 1, "run_id": "half')  # a writer killed mid-line (power loss)
    later = store.make_record("estimate", "ok", run_name="r")
    store.append_record(path, later)
    loaded = store.read_records(path)
    assert [r["run_id"] for r in loaded.records] == [ok["run_id"], later["run_id"]]
    assert len(loaded.notes) == 1 and "r.jsonl:2" in loaded.notes[0]
    with pytest.warns(UserWarning, match="not valid JSON"):
        assert len(store.load_results(path)) == 2


def test_schema_0_records_are_upgraded(tmp_path):
    v0 = profile_like(name="dgl-k4")
    rec = store.upgrade(v0)
    assert rec["schema"] == 1 and rec["kind"] == "profile" and rec["status"] == "ok"
    assert rec["run_name"] == "dgl-k4" and "name" not in rec
    assert rec["timing"] == {"step_seconds": 0.05, "images_per_second": 2560.0, "steps": None}
    assert rec["memory"]["source"] == "cuda-allocator" and rec["memory"]["peak_allocated_bytes"] == 123_456_789
    assert "peak_memory_bytes" not in rec and "step_seconds" not in rec and rec["env"]["device"] == "cuda:0"
    assert rec["config_id"] == RunConfig.from_dict(v0["config"]).config_id()
    assert rec["run_id"] == store.upgrade(profile_like(name="dgl-k4"))["run_id"]  # stable across loads
    assert set(store.RECORD_KEYS) <= set(rec)
    # a v0 training result and a v0 estimate
    t = store.upgrade({"config": v0["config"], "top1": 0.75, "epochs": 2})
    assert t["kind"] == "train" and t["accuracy"]["test_error_pct"] == pytest.approx(25.0)
    e = store.upgrade({"config": v0["config"], "predicted": {"peak_allocated_bytes": 1}})
    assert e["kind"] == "estimate"
    # a file mixing versions loads as one frame; a newer version is left out with a note
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps(v0) + "\n")
    store.append_record(path, store.make_record("estimate", "ok", run_name="new"))
    with open(path, "a") as f:
        f.write(json.dumps({"schema": 99, "kind": "estimate"}) + "\n")
    loaded = store.read_records(path)
    assert [r["schema"] for r in loaded.records] == [1, 1]
    assert "newer" in loaded.notes[0]
    frame = store.load_results(path, warn=False)
    assert list(frame["kind"]) == ["profile", "estimate"] and "timing.step_seconds" in frame
    # `hpff-bench profile --json` output (a .json file with one dict) is readable too
    (tmp_path / "p.json").write_text(json.dumps(v0))
    assert store.read_records(tmp_path / "p.json").records[0]["kind"] == "profile"


WRITER = textwrap.dedent(
    """
    import sys
    from hpff_bench.runner import store
    path, writer, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    pad = "x" * 60_000  # far larger than a pipe or page buffer: a torn write would show
    for i in range(n):
        rec = store.make_record("estimate", "ok", run_name=f"w{writer}", message=f"{writer}:{i}:{pad}")
        store.append_record(path, rec)
    """
)


def test_concurrent_appends_from_several_processes_never_interleave(tmp_path):
    path = tmp_path / "shared.jsonl"
    writers, n = 4, 25
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w), str(n)]) for w in range(writers)]
    assert [p.wait(timeout=120) for p in procs] == [0] * writers
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == writers * n + 1
    seen = {w: [] for w in range(writers)}
    for line in lines[:-1]:
        rec = json.loads(line)  # every line is one whole record
        w, i, pad = rec["message"].split(":")
        assert pad == "x" * 60_000
        seen[int(w)].append(int(i))
    assert all(seen[w] == list(range(n)) for w in range(writers))  # each writer's order is kept


def test_failed_runs_still_record_their_module_count():
    for cfg, n in [(RunConfig(network="resnet32", method="dgl", k=16), 16),
                   (RunConfig(network="resnet110", method="dgl", k=55), 54),
                   (RunConfig(network="resnet32", method="gc", k=16), 1)]:
        assert store.make_record("profile", "oom", config=cfg)["modules"] == n
    assert store.make_record("profile", "ok", config=RunConfig(), modules=7)["modules"] == 7
