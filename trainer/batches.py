"""Examples -> token ids with a loss mask on the answer, epoch order, and left-padded training batches.

Each example is rendered through the worker's contract (render_user_message with the worker's token
budget, then render_training_text), so training sees byte for byte the prompt that serving scores,
and is tokenized in the classifier's pieces: the system prefix shared by every prompt (up to the user
turn's <|im_start|>), the rest of the prompt, then the answer's tokens and <|im_end|>. Only the answer
and <|im_end|> are trained; the template's newline after <|im_end|> is not (serving stops there).
The shared prefix (about 190 of ~220 tokens) is run once per forward pass, not once per row.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Sampler

from trainer import TrainerError
from trainer.data import Example
from worker.contract import (
    FOLDERS,
    PRIORITIES,
    PromptTokens,
    format_answer,
    render_training_text,
    render_user_message,
)
from worker.model.loading import EOS_TOKEN

IGNORE = -100  # label of a position without loss (cross_entropy's ignore_index)


class EncodingError(TrainerError):
    """The tokenizer does not produce the answer layout the trainer relies on."""


@dataclass(frozen=True)
class Encoded:
    """One example as tokens after the shared prefix. ``trained`` = answer + <|im_end|>; ``tail`` = untrained."""

    prompt: tuple[int, ...]  # the prompt after the shared system prefix
    trained: tuple[int, ...]
    tail: tuple[int, ...]
    folder_positions: tuple[int, ...]  # indices into ``trained`` of the folder name's tokens
    priority_positions: tuple[int, ...]  # indices into ``trained`` of the priority digit
    folder: str
    priority: int

    @property
    def input_ids(self) -> list[int]:
        return [*self.prompt, *self.trained, *self.tail]

    @property
    def labels(self) -> list[int]:
        return [IGNORE] * len(self.prompt) + list(self.trained) + [IGNORE] * len(self.tail)


@dataclass(frozen=True)
class Batch:
    """The shared prefix, then left-padded rows whose completions all end at the last column."""

    prefix: torch.Tensor  # [P] the system prefix every row continues
    input_ids: torch.Tensor  # [B, S]
    attention_mask: torch.Tensor  # [B, P + S] (the prefix, then each row's padding and tokens)
    position_ids: torch.Tensor  # [B, S] (P at each row's first real token)
    labels: torch.Tensor  # [B, S] IGNORE outside the trained tokens
    keep: int  # the last `keep` columns hold every trained token and the position that predicts the first
    # Logits are computed at K = keep - 1 columns only (the answers' predictions; no per-row count, so no sync):
    logit_positions: torch.Tensor  # [K] columns whose next-token logits are needed (S - keep ... S - 2)
    targets: torch.Tensor  # [B * K] the next token at each of them, IGNORE where untrained (padding, prompt, tail)
    target_weights: torch.Tensor  # [B * K] their loss weights (0 where IGNORE)

    def inputs(self) -> dict[str, Any]:
        """The batch as the keyword dict transformers' Trainer moves to the device and hands to compute_loss."""
        return {"prefix": self.prefix, "input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "position_ids": self.position_ids, "labels": self.labels, "logit_positions": self.logit_positions,
                "targets": self.targets, "target_weights": self.target_weights}


class Encoder:
    """Tokenizes examples the way the worker will see them."""

    def __init__(self, tokenizer: Any, max_input_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.max_input_tokens = max_input_tokens
        self.eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
        self.prompt_tokens = PromptTokens.of(tokenizer)  # the classifier's cut and its tokenization
        self.prefix_text = self.prompt_tokens.prefix_text
        self.prefix: tuple[int, ...] = self.prompt_tokens.prefix
        self._completions: dict[tuple[str, int], tuple[tuple[int, ...], ...]] = {}

    def encode(self, example: Example) -> Encoded:
        user, _ = render_user_message(example.notification, self.tokenizer, self.max_input_tokens)
        answer = format_answer(example.folder, example.priority)
        prompt, completion = render_training_text(self.tokenizer, user, answer)
        if not prompt.startswith(self.prefix_text):
            raise EncodingError("the prompt does not start with the shared system prefix")
        prompt_ids = self.prompt_tokens.suffix(user)  # sender text split: a typed <|im_end|> stays characters
        trained, tail, folders, priorities = self._completion(example.folder, example.priority, completion)
        return Encoded(prompt_ids, trained, tail, folders, priorities, example.folder, example.priority)

    def _completion(self, folder: str, priority: int, completion: str) -> tuple[tuple[int, ...], ...]:
        """(trained, tail, folder positions, priority positions); 12 possible answers, so cached."""
        key = (folder, priority)
        if key not in self._completions:
            encoding = self.tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
            ids: list[int] = encoding["input_ids"]
            if self.eos_id not in ids:
                raise EncodingError(f"the answer turn {completion!r} has no {EOS_TOKEN}")
            end = ids.index(self.eos_id) + 1
            answer = format_answer(folder, priority)
            folder_span = _span(answer, f'"{folder}"', 1, len(folder))
            priority_span = _span(answer, f": {priority}}}", 2, 1)
            offsets = encoding["offset_mapping"][:end]
            self._completions[key] = (
                tuple(ids[:end]), tuple(ids[end:]),
                tuple(i for i, (a, b) in enumerate(offsets) if a < folder_span[1] and b > folder_span[0]),
                tuple(i for i, (a, b) in enumerate(offsets) if a < priority_span[1] and b > priority_span[0]),
            )
        return self._completions[key]


def _span(text: str, needle: str, skip: int, length: int) -> tuple[int, int]:
    start = text.index(needle) + skip
    return start, start + length


# --- what each epoch sees ----------------------------------------------------------------------------


def epoch_order(encoded: Sequence[Encoded], sampling: str, rng: random.Random) -> list[int]:
    """Indices for one epoch: a shuffle (natural) or a same-size draw with equal priority shares."""
    if sampling == "natural":
        order = list(range(len(encoded)))
        rng.shuffle(order)
        return order
    counts = Counter(e.priority for e in encoded)
    weights = [1.0 / counts[e.priority] for e in encoded]
    return rng.choices(range(len(encoded)), weights=weights, k=len(encoded))


class EpochSampler(Sampler[int]):
    """Each epoch's order (epoch_order, seeded by seed and epoch so a resumed run replays it), length-sorted
    inside each optimizer step's group so that its micro-batches pad little; the same examples per step.

    transformers' Trainer calls set_epoch; under several processes accelerate hands each its share.
    """

    def __init__(self, encoded: Sequence[Encoded], sampling: str, seed: int, group: int) -> None:
        self.lengths = [len(item.input_ids) for item in encoded]
        self.encoded, self.sampling, self.seed, self.group = encoded, sampling, seed, group
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.encoded)

    def __iter__(self) -> Iterator[int]:
        order = epoch_order(self.encoded, self.sampling, random.Random(self.seed * 100_003 + self.epoch))
        for start in range(0, len(order), self.group):
            yield from sorted(order[start:start + self.group], key=lambda i: self.lengths[i])


def label_weights(encoded: Sequence[Encoded], scheme: str) -> dict[str, float]:
    """Loss weight of each folder's and priority's label tokens: 1, or n / (classes x class count)."""
    keys = [*FOLDERS, *(str(p) for p in PRIORITIES)]
    if scheme == "none":
        return dict.fromkeys(keys, 1.0)
    n = len(encoded)
    folders = Counter(e.folder for e in encoded)
    priorities = Counter(e.priority for e in encoded)
    weights = {f: n / (len(FOLDERS) * folders[f]) if folders[f] else 1.0 for f in FOLDERS}
    for p in PRIORITIES:
        weights[str(p)] = n / (len(PRIORITIES) * priorities[p]) if priorities[p] else 1.0
    return weights


def token_weights(item: Encoded, weights: dict[str, float]) -> list[float]:
    """Per trained token: 1, except the folder-name and priority-digit tokens under a weighting."""
    row = [1.0] * len(item.trained)
    for i in item.folder_positions:
        row[i] = weights[item.folder]
    for i in item.priority_positions:
        row[i] = weights[str(item.priority)]
    return row


def collate(items: Sequence[Encoded], prefix: Sequence[int], pad_id: int, weights: dict[str, float]) -> Batch:
    """Left-pad to the longest row (padding sits between prefix and row) so every completion ends last."""
    width = max(len(item.input_ids) for item in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), len(prefix) + width), dtype=torch.long)
    mask[:, : len(prefix)] = 1
    positions = torch.zeros((len(items), width), dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    loss_weights = torch.zeros((len(items), width), dtype=torch.float32)
    for row, item in enumerate(items):
        seq = item.input_ids
        start = width - len(seq)
        ids[row, start:] = torch.tensor(seq)
        mask[row, len(prefix) + start:] = 1
        positions[row, start:] = torch.arange(len(prefix), len(prefix) + len(seq))
        labels[row, start:] = torch.tensor(item.labels)
        first = start + len(item.prompt)
        loss_weights[row, first:first + len(item.trained)] = torch.tensor(token_weights(item, weights))
    keep = max(len(item.trained) + len(item.tail) for item in items) + 1
    # Column t's logits predict token t + 1: columns S-keep .. S-2 predict the last keep - 1 tokens.
    logit_positions = torch.arange(width - keep, width - 1)
    return Batch(torch.tensor(prefix, dtype=torch.long), ids, mask, positions, labels, keep, logit_positions,
                 labels[:, -(keep - 1):].flatten(), loss_weights[:, -(keep - 1):].flatten())


class Collator:
    """Examples -> a Batch's keyword dict; what transformers' Trainer calls as data_collator."""

    def __init__(self, encoder: Encoder, pad_id: int, weights: dict[str, float]) -> None:
        self.prefix, self.pad_id, self.weights = encoder.prefix, pad_id, weights

    def __call__(self, items: Sequence[Encoded]) -> dict[str, Any]:
        return collate(items, self.prefix, self.pad_id, self.weights).inputs()
