"""An example plug-in for hpff-bench: one network and one local method, found through entry points."""
