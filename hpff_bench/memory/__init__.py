"""Memory probes: live-tensor tracker, CUDA allocator, NVML, fake-tensor prediction, bounds.
(Where in a step the code is, the scope the tracker reads, is `hpff_bench.scope`: methods set it.)

tracker          exact live tensor-storage bytes, by category and scope (any device, fake too)
trace            run a method's steps under the tracker, on real or fake tensors
allocator_model  the CUDA caching allocator replayed on a tracker's event log
affine           an event log as a + c * batch per event: logs at other batches without tracing
predict          a CUDA run's memory without a GPU, as labelled terms
bound            a lower bound from the same trace, and efficiency = bound / peak
cuda_probe       the allocator's own peaks, snapshots and their offline render; CudaProbe
nvml             NVML device / per-process use, sampled by a thread
overheads        CUDA context, cuBLAS and cuDNN workspaces from a probe's readings
(hpff_bench.gpu_check, above profiling, measures all of this against the prediction on a GPU)
"""
