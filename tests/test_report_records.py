"""Which records become report rows: invalid ones are counted notes, a later record of the same
task supersedes an earlier one, and no valid record at all is exit 2."""

from __future__ import annotations

import json

from hpff_bench.cli import main
from hpff_bench.config import RunConfig
from hpff_bench.report.load import read_results
from hpff_bench.runner import store

CFG = RunConfig(network="resnet20", method="dgl", k=2, batch_size=8)
ENV = {"hostname": "box", "device_name": None}


def rec(status="ok", time="2026-01-01T00:00:00+00:00", config=CFG, **over) -> dict:
    r = store.make_record("profile", status if status in store.STATUSES else "ok", config=config, suite="s",
                          run_name="r", env={**ENV, "time": time}, message=None if status == "ok" else "boom")
    r.update(over, status=status)
    return r


def write(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_invalid_records_are_counted_notes_never_rows(tmp_path):
    f = tmp_path / "r.jsonl"
    bad = [rec(status="maybe"), rec(kind="guess", time="1"), rec(config="resnet20"), rec(memory=[1, 2], time="2"),
           rec(params="many", time="3")]
    write(f, [rec(), *bad])
    loaded = read_results([f])
    assert len(loaded.frame) == 1 and list(loaded.frame["status"]) == ["ok"]
    invalid = [n for n in loaded.notes if "not a valid record" in n]
    assert len(invalid) == len(bad)
    assert any("unknown status 'maybe'" in n for n in invalid) and any("params must be a number" in n for n in invalid)


def test_a_resumed_task_shows_its_final_outcome(tmp_path):
    f = tmp_path / "r.jsonl"
    other_machine = rec(status="oom", env={"hostname": "gpu", "device_name": "H100", "time": "2026-01-03T00:00:00+00:00"})
    write(f, [rec(status="error", time="2026-01-01T00:00:00+00:00"), rec(time="2026-01-02T00:00:00+00:00"),
              other_machine, rec(config=CFG.replace(k=3), status="error")])
    loaded = read_results([f])
    rows = sorted(zip(loaded.frame["k"], loaded.frame["status"], loaded.frame["env.hostname"]))
    # the error before the successful resume is gone; another machine's result and another config stay
    assert rows == [(2, "ok", "box"), (2, "oom", "gpu"), (3, "error", "box")]
    assert any("1 record(s) superseded" in n for n in loaded.notes)


def test_the_cli_renders_valid_records_and_refuses_none(tmp_path, capsys):
    f = tmp_path / "r.jsonl"
    write(f, [rec(), rec(status="maybe")])
    assert main(["report", str(f), "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "1 records, 1 ok" in out and "unknown status 'maybe'" in out
    write(f, [rec(status="maybe")])
    assert main(["report", str(f), "-o", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no valid result record" in err[0] and "unknown status 'maybe'" in err[0]
    assert not (tmp_path / "out2").exists()
