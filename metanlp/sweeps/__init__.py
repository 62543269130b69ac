"""Hyper-parameter sweeps with Optuna over a method's declared options (``python -m metanlp sweep``)."""
