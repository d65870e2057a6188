"""Memory probes: live-tensor tracker, CUDA allocator, NVML, fake-tensor prediction, bounds."""
