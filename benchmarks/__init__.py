"""Benchmarks of the handops ops against pure-PyTorch alternatives; ``python -m benchmarks.run_all`` runs them all."""
