"""hpff-bench: what each way of training a network costs in GPU memory, time and accuracy."""

__version__ = "0.1.0"
