"""Synthetic notifications: the catalogue of scenarios (catalog.py) and the seeded sampler (sampler.py).

Beside the contract, so that the trainer (training data) and the worker (demo producer, benchmarks) both
draw from it without the worker importing the trainer.
"""
