"""Tokenizers for the from-scratch encoder: MiniLM's WordPiece, or characters for Chinese."""

from __future__ import annotations

import torch

PAD, CLS, SEP, MASK, UNK = "[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"
SPECIAL_TOKENS = (PAD, CLS, SEP, MASK, UNK)


class CharTokenizer:
    """One token per character; ids come from hashing the code point into a fixed table.

    A fixed table needs no vocabulary file and no fitting step, so any text (Chinese
    included) tokenises the same way on every machine; rare collisions are the price.
    """

    def __init__(self, vocab_size: int = 8000) -> None:
        if vocab_size <= len(SPECIAL_TOKENS) + 1:
            raise ValueError(f"vocab_size must exceed {len(SPECIAL_TOKENS) + 1}, got {vocab_size}")
        self.vocab_size = vocab_size
        self.pad_token_id, self.cls_token_id, self.sep_token_id, self.mask_token_id, self.unk_token_id = range(5)
        self.all_special_ids = list(range(len(SPECIAL_TOKENS)))
        self._char_of_id: dict[int, str] = {}

    def _char_id(self, char: str) -> int:
        token_id = len(SPECIAL_TOKENS) + ord(char) % (self.vocab_size - len(SPECIAL_TOKENS))
        self._char_of_id.setdefault(token_id, char)
        return token_id

    def encode(self, text: str, max_length: int) -> list[int]:
        chars = [c for c in text if not c.isspace()][: max_length - 2]
        return [self.cls_token_id, *(self._char_id(c) for c in chars), self.sep_token_id]

    def __call__(self, texts: list[str], max_length: int = 64) -> dict[str, torch.Tensor]:
        encoded = [self.encode(text, max_length) for text in texts]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [
            SPECIAL_TOKENS[i] if i < len(SPECIAL_TOKENS) else self._char_of_id.get(i, UNK) for i in ids
        ]


class WordPieceTokenizer:
    """MiniLM's WordPiece vocabulary behind the same small interface as ``CharTokenizer``."""

    def __init__(self) -> None:
        from metanlp.encoders.minilm import load_tokenizer

        self._tokenizer = load_tokenizer()
        self.vocab_size = self._tokenizer.vocab_size
        self.pad_token_id = self._tokenizer.pad_token_id
        self.cls_token_id = self._tokenizer.cls_token_id
        self.sep_token_id = self._tokenizer.sep_token_id
        self.mask_token_id = self._tokenizer.mask_token_id
        self.unk_token_id = self._tokenizer.unk_token_id
        self.all_special_ids = list(self._tokenizer.all_special_ids)

    def __call__(self, texts: list[str], max_length: int = 64) -> dict[str, torch.Tensor]:
        batch = self._tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return self._tokenizer.convert_ids_to_tokens(ids)


def build_tokenizer(name: str, vocab_size: int = 8000) -> CharTokenizer | WordPieceTokenizer:
    if name == "wordpiece":
        return WordPieceTokenizer()
    if name == "char":
        return CharTokenizer(vocab_size)
    raise ValueError(f"unknown tokenizer {name!r}; choose 'wordpiece' or 'char'")
