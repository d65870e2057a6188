"""ScopeTimer: a step's wall time split by scope kind, exactly as the clock moved."""

from __future__ import annotations

import pytest

import hpff_bench.scope as scope_module
from hpff_bench.scope import ScopeTimer, scope


def test_each_interval_goes_to_the_scope_that_was_current(monkeypatch):
    clock = iter([0.0, 1.0, 3.0, 6.0, 10.0, 11.0])  # enter, backbone, aux, aux ends, backbone ends, exit
    monkeypatch.setattr(scope_module.time, "perf_counter", lambda: next(clock))
    with ScopeTimer() as timer:
        with scope("backbone", 0, "module0"):
            with scope("aux", None, "aux/independent/0"):
                pass
    assert timer.seconds == {"step": 2.0, "backbone": 6.0, "aux": 3.0}


def test_nothing_is_timed_outside_it_and_one_runs_at_a_time(monkeypatch):
    with ScopeTimer() as timer, pytest.raises(RuntimeError, match="already running"):
        with ScopeTimer():
            pass
    seen = dict(timer.seconds)
    monkeypatch.setattr(scope_module.time, "perf_counter", lambda: pytest.fail("clock read with no timer running"))
    with scope("backbone"):
        pass
    assert timer.seconds == seen and scope_module._timer is None
