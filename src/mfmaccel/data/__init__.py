"""Datasets and benchmarks that mfmaccel builds or loads for training and evaluation."""
