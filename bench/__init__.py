"""Benchmarks: each prints figures as `name: value unit`, one per line, for comparing runs."""
