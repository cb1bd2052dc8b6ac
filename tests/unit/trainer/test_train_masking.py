"""The loss is on the answer and its end token only, aligned so each logit predicts the next token."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from trainer.batches import IGNORE, Encoder, EpochSampler, collate, epoch_order, label_weights, token_weights
from trainer.data import Example
from trainer.loop import batch_loss
from worker.contract import Notification, format_answer, render_prompt, render_user_message
from worker.model.loading import EOS_TOKEN, load_tokenizer

EXAMPLES = [
    Example(Notification(app="Slack", sender="Ana", title="Review", body="please look at PR #12 today"), "Work", 2),
    Example(Notification(title="50% off", body="Sale ends tonight!!!"), "Promotions", 1),
    Example(Notification(body="Someone signed in from Berlin. Was this you?"), "Alerts", 3),
    Example(Notification(app="WhatsApp", sender="Mom", body="call me " + "now " * 300), "Personal", 3),
]


pytestmark = pytest.mark.integration  # the real tokenizer (npm)


@pytest.fixture(scope="module")
def encoder(tokenizer_dir: Path) -> Encoder:
    """An Encoder on its own tokenizer, loaded as the trainer loads it (pad/eos set there), so no test
    changes the session's shared tokenizer."""
    return Encoder(load_tokenizer(str(tokenizer_dir)), max_input_tokens=64)


def test_trained_tokens_are_exactly_the_answer_and_end_token(encoder: Encoder, qwen3_tokenizer: Any) -> None:
    for example in EXAMPLES:
        item = encoder.encode(example)
        trained = [t for t, label in zip(item.input_ids, item.labels, strict=True) if label != IGNORE]
        answer = format_answer(example.folder, example.priority)
        assert qwen3_tokenizer.decode(trained) == answer + EOS_TOKEN
        assert trained == [*qwen3_tokenizer.encode(answer, add_special_tokens=False), encoder.eos_id]
        assert qwen3_tokenizer.decode(list(item.tail)) == "\n"  # the template's newline is not trained


def test_prompt_is_the_serving_prompt_with_the_workers_truncation(encoder: Encoder, qwen3_tokenizer: Any) -> None:
    for example in EXAMPLES:
        item = encoder.encode(example)
        user, _ = render_user_message(example.notification, qwen3_tokenizer, 64)
        assert qwen3_tokenizer.decode([*encoder.prefix, *item.prompt]) == render_prompt(qwen3_tokenizer, user)
        assert qwen3_tokenizer.decode(list(encoder.prefix)).endswith("<|im_end|>\n<|im_start|>")
    long = encoder.encode(EXAMPLES[3])
    assert render_user_message(EXAMPLES[3].notification, qwen3_tokenizer, 64)[1]  # it was cut
    assert len(long.prompt) < 64 + 16


def test_label_token_positions(encoder: Encoder, qwen3_tokenizer: Any) -> None:
    for example in EXAMPLES:
        item = encoder.encode(example)
        folder = qwen3_tokenizer.decode([item.trained[i] for i in item.folder_positions])
        priority = qwen3_tokenizer.decode([item.trained[i] for i in item.priority_positions])
        assert folder.strip() == example.folder and priority.strip() == str(example.priority)


class PerfectPredictor(torch.nn.Module):
    """Logits whose argmax at position t is the input token at t + 1 (and a fixed token at the end)."""

    def forward(self, input_ids: torch.Tensor, logits_to_keep: int | torch.Tensor, past_key_values: Any = None,
                **_: Any) -> SimpleNamespace:
        if past_key_values is not None and past_key_values.get_seq_length() == 0:  # the shared prefix pass
            kv = torch.zeros(1, 1, input_ids.shape[1], 2)
            past_key_values.update(kv, kv, 0)
        nxt = torch.cat([input_ids[:, 1:], input_ids[:, :1]], dim=1)
        nxt = nxt[:, -logits_to_keep:] if isinstance(logits_to_keep, int) else nxt[:, logits_to_keep]
        logits = torch.full((*nxt.shape, 151_936), -30.0)
        logits.scatter_(2, nxt.unsqueeze(-1), 30.0)
        return SimpleNamespace(logits=logits)


def test_batch_loss_scores_exactly_the_trained_tokens(encoder: Encoder, qwen3_tokenizer: Any) -> None:
    items = [encoder.encode(e) for e in EXAMPLES]
    batch = collate(items, encoder.prefix, qwen3_tokenizer.pad_token_id, label_weights(items, "none"))
    assert batch.attention_mask.shape[1] == len(encoder.prefix) + batch.input_ids.shape[1]
    assert batch.attention_mask[:, : len(encoder.prefix)].all()
    trained_per_row = [len(item.trained) for item in items]
    assert int((batch.labels != IGNORE).sum()) == sum(trained_per_row)
    for row, item in enumerate(items):  # left padding: every row's completion ends in the last column
        assert batch.input_ids[row, -len(item.tail):].tolist() == list(item.tail)
        kept = batch.labels[row][batch.labels[row] != IGNORE].tolist()
        assert kept == list(item.trained)
    assert batch.targets[batch.targets != IGNORE].tolist() == [t for item in items for t in item.trained]
    assert batch.logit_positions.tolist() == list(range(batch.input_ids.shape[1] - batch.keep,
                                                        batch.input_ids.shape[1] - 1))
    loss, weight, correct, tokens = batch_loss(PerfectPredictor(), batch.inputs())
    assert int(tokens) == sum(trained_per_row) and int(correct) == int(tokens) and float(weight) == int(tokens)
    assert float(loss) / int(tokens) < 1e-6


def test_weighted_label_tokens_and_balanced_sampling(encoder: Encoder) -> None:
    items = [encoder.encode(e) for e in [*EXAMPLES, EXAMPLES[1], EXAMPLES[1]]]
    weights = label_weights(items, "balanced")
    assert weights["1"] == pytest.approx(6 / (3 * 3)) and weights["3"] == pytest.approx(6 / (3 * 2))
    row = token_weights(items[0], weights)
    assert row[items[0].priority_positions[0]] == pytest.approx(weights["2"])
    assert row.count(1.0) == len(row) - len(items[0].folder_positions) - 1
    assert set(label_weights(items, "none").values()) == {1.0}
    order = epoch_order(items * 200, "balanced", random.Random(0))
    shares = Counter((items * 200)[i].priority for i in order)
    assert all(abs(count / len(order) - 1 / 3) < 0.05 for count in shares.values())
    assert sorted(epoch_order(items, "natural", random.Random(0))) == list(range(len(items)))


def test_epoch_sampler_replays_each_epoch_and_sorts_inside_each_step(encoder: Encoder) -> None:
    items = [encoder.encode(e) for e in EXAMPLES] * 5  # 20 examples, steps of 8
    sampler = EpochSampler(items, "natural", seed=3, group=8)
    first = list(sampler)
    assert sorted(first) == list(range(20)) and list(sampler) == first  # the same epoch, the same order
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and sorted(second) == list(range(20))
    natural = epoch_order(items, "natural", random.Random(3 * 100_003))
    for start in range(0, 20, 8):  # each optimizer step keeps its examples, shortest first
        group = first[start:start + 8]
        assert sorted(group) == sorted(natural[start:start + 8])
        assert [len(items[i].input_ids) for i in group] == sorted(len(items[i].input_ids) for i in group)
