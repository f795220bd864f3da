"""Throughput benchmarks: this framework beside a re-creation of the study's pipeline.

``python -m fer_lightning.bench`` is their command."""
