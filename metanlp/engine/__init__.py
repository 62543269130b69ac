"""The engine: runs methods from a config, streams metrics, saves state."""

from metanlp.engine.config import ConfigError, RunConfig
from metanlp.engine.training import EncoderPool, RunCancelled, RunResult, run_training

__all__ = ["ConfigError", "EncoderPool", "RunCancelled", "RunConfig", "RunResult", "run_training"]
