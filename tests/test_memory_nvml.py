"""The NVML sampler reports the right peaks from an injected reader, stops cleanly, and says
when NVML is unavailable instead of failing."""

from __future__ import annotations

import threading
import time

import pytest

from hpff_bench.memory import nvml
from hpff_bench.memory.nvml import NvmlSampler, nvml_index


def scripted(readings):
    """A reader that walks through `readings`, then repeats the last one."""
    it = iter(readings)
    last = [None]

    def read():
        last[0] = next(it, last[0])
        return last[0]

    return read


def test_peaks_from_injected_reader_and_clean_stop():
    readings = [(100, 10), (500, 50), (300, None), (900, 40), (200, 20)]
    s = NvmlSampler(interval_s=0.001, reader=scripted(readings))
    before = threading.active_count()
    with s:
        time.sleep(0.05)  # the thread samples all readings, then repeats the last
    r = s.result
    assert (r.available, r.peak_used_bytes, r.peak_process_bytes) == (True, 900, 50)
    assert r.samples >= len(readings) and r.source == "process"
    assert threading.active_count() == before  # the sampling thread is gone
    assert s.stop() is r  # a second stop is harmless


def test_device_only_when_process_is_never_seen():
    s = NvmlSampler(interval_s=0.001, reader=scripted([(5, None), (7, None)])).start()
    time.sleep(0.01)
    r = s.stop()
    assert (r.peak_used_bytes, r.peak_process_bytes, r.source) == (7, None, "device")


def test_unavailable_library_or_gpu_is_reported_not_raised(monkeypatch):
    def no_nvml(*a, **k):
        raise ImportError("No module named 'pynvml'")

    monkeypatch.setattr(nvml, "nvml_reader", no_nvml)
    with NvmlSampler() as s:
        pass
    r = s.result
    assert not r.available and "unavailable" in r.reason and r.source is None
    assert r.as_dict()["peak_used_bytes"] is None


def test_real_nvml_without_gpu_is_unavailable():
    r = NvmlSampler(interval_s=0.001).start().stop()  # this machine has no NVIDIA driver
    if r.available:  # pragma: no cover - a GPU machine
        assert r.peak_used_bytes > 0
    else:
        assert r.reason


def test_reader_failing_midway_stops_sampling_keeps_peaks():
    calls = []

    def read():
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("GPU lost")
        return (len(calls) * 10, None)

    s = NvmlSampler(interval_s=0.001, reader=read).start()
    time.sleep(0.05)
    r = s.stop()
    assert r.available and r.peak_used_bytes == 30 and "GPU lost" in r.reason


@pytest.mark.parametrize(
    "visible,index,expected",
    [
        (None, 1, 1),
        ("", 0, 0),
        ("2,3", 0, 2),
        ("2, 3", 1, 3),
        ("GPU-8f6c1a2b-0000-1111-2222-333344445555,1", 0, "GPU-8f6c1a2b-0000-1111-2222-333344445555"),
        ("MIG-abc", 0, "MIG-abc"),
    ],
)
def test_torch_index_to_nvml_device(visible, index, expected, monkeypatch):
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        assert nvml_index(index) == expected
    else:
        assert nvml_index(index, visible) == expected


def test_index_outside_visible_devices():
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES"):
        nvml_index(2, "0,1")
