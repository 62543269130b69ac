"""A method adapted to your own classes, kept: save it, load it back, classify with it.

An adapted model is a method (fresh or meta-trained) plus the few examples it adapted to. Saving
writes the method's learned state (safetensors, checksummed; a frozen pretrained encoder is
not copied) and the class names with their examples (JSON); loading adapts the loaded method to
the same examples again with the same seed, which rebuilds exactly the same task model: every
method's adaptation depends on the support set and the seed only.

    from metanlp.adapted import AdaptedModel
    model = AdaptedModel.load("runs/adapted/weather-music-cooking")
    model.predict(["will it snow tomorrow"])          # ['weather']
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from metanlp.data.types import Episode
from metanlp.engine.checkpoint import load_method, save_method
from metanlp.methods.base import InnerStepCallback, Method, TaskModel

FORMAT = "metanlp-adapted-1"
TASK_FILE = "task.json"
METHOD_FOLDER = "method"
ADAPT_SEED = 0  # adaptation draws random numbers (e.g. a fresh head): fixed, so a reload rebuilds the same model
PREDICT_BATCH = 256


class AdaptedModelError(ValueError):
    """A folder that is not a readable adapted model; the message names the folder and the problem."""


@dataclass
class AdaptedModel:
    method: Method
    episode: Episode  # the examples it adapted to (the support set; queries only measured the adaptation)
    task_model: TaskModel
    seed: int = ADAPT_SEED

    @property
    def classes(self) -> list[str]:
        return list(self.episode.classes)

    @classmethod
    def adapt(
        cls, method: Method, episode: Episode, on_inner_step: InnerStepCallback | None = None, seed: int = ADAPT_SEED
    ) -> AdaptedModel:
        """Adapt ``method`` to ``episode`` with a fixed seed (the method itself is left unchanged)."""
        torch.manual_seed(seed)
        return cls(method, episode, method.adapt(episode, on_inner_step=on_inner_step), seed)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities (len(texts), N), in the order of ``classes``."""
        if not texts:
            return np.zeros((0, len(self.classes)))
        parts = [self.task_model.predict_proba(list(texts[start:start + PREDICT_BATCH])).cpu().numpy()
                 for start in range(0, len(texts), PREDICT_BATCH)]
        return np.concatenate(parts)

    def predict(self, texts: list[str]) -> list[str]:
        return [self.classes[index] for index in self.predict_proba(texts).argmax(axis=1)] if texts else []

    def save(self, folder: str | Path) -> Path:
        """Write the method's checkpoint and the task (class names, examples, seed) into ``folder``."""
        folder = Path(folder)
        save_method(self.method, folder / METHOD_FOLDER)
        task = {
            "format": FORMAT,
            "method": self.method.card.name,
            "classes": self.classes,
            "support": [{"text": text, "label": self.classes[label]}
                        for text, label in zip(self.episode.support_texts, self.episode.support_labels, strict=True)],
            "query": [{"text": text, "label": self.classes[label]}
                      for text, label in zip(self.episode.query_texts, self.episode.query_labels, strict=True)],
            "seed": self.seed,
        }
        partial = folder / f".{TASK_FILE}.tmp"
        partial.write_text(json.dumps(task, indent=2, ensure_ascii=False), encoding="utf-8")
        os.replace(partial, folder / TASK_FILE)
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: torch.device | str = "cpu") -> AdaptedModel:
        """The saved model, adapted again to its saved examples (``AdaptedModelError`` if the folder is not one)."""
        folder = Path(folder)
        task = _read_task(folder)
        method = load_method(folder / METHOD_FOLDER, device=device, owner=f"the adapted model in {folder}")
        return cls.adapt(method, _episode(task, folder), seed=task["seed"])


def _read_task(folder: Path) -> dict:
    try:
        task = json.loads((folder / TASK_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdaptedModelError(f"{folder} holds no {TASK_FILE}: it is not a saved adapted model") from None
    except (OSError, ValueError) as error:
        raise AdaptedModelError(f"{folder / TASK_FILE} cannot be read: {error}") from None
    if not isinstance(task, dict) or task.get("format") != FORMAT:
        raise AdaptedModelError(f"{folder / TASK_FILE} is not a metanlp adapted model ({FORMAT})")
    if not isinstance(task.get("seed"), int) or not isinstance(task.get("classes"), list):
        raise AdaptedModelError(f"{folder / TASK_FILE} lacks its classes or seed")
    return task


def _episode(task: dict, folder: Path) -> Episode:
    classes = [str(name) for name in task["classes"]]
    index = {name: position for position, name in enumerate(classes)}

    def examples(key: str) -> tuple[list[str], list[int]]:
        rows = task.get(key) or []
        if not isinstance(rows, list) or any(not isinstance(row, dict) or row.get("label") not in index for row in rows):
            raise AdaptedModelError(f"{folder / TASK_FILE}: every {key} example needs a text and one of the classes")
        return [str(row.get("text", "")) for row in rows], [index[row["label"]] for row in rows]

    support_texts, support_labels = examples("support")
    query_texts, query_labels = examples("query")
    if not support_texts:
        raise AdaptedModelError(f"{folder / TASK_FILE} has no support examples to adapt to")
    return Episode(classes=classes, support_texts=support_texts, support_labels=support_labels,
                   query_texts=query_texts, query_labels=query_labels, meta={"split": "user"})
