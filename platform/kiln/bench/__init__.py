"""Benchmarks: ``python -m kiln.bench.<name>`` prints figures side by side; never run as tests."""
