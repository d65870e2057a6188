"""Datasets, transforms and synthetic batches."""
