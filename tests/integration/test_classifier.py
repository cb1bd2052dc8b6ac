"""The classifier on a tiny random-weight Qwen3 with the real tokenizer: exactness, modes, prefix reuse."""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from transformers import DynamicCache

from worker.contract import FOLDERS, PRIORITIES, Notification, format_answer, render_prompt, render_user_message
from worker.model.classifier import Classifier

pytestmark = pytest.mark.integration

APPS = ["Slack", "Gmail", "GitHub", "WhatsApp", "Amazon", "Chase", "PagerDuty", "Calendar", "", "Instagram"]
WORDS = [
    'meeting', 'deploy', 'sale', '50%', 'off', 'mom', 'dinner', 'password', 'reset', 'package', 'delivered',
    'invoice', 'URGENT', 'tomorrow', 'free', 'offer', 'build', 'failed', 'hey', 'lunch?', '🎉', 'café',
    'naïve', '東京', 'refund', 'flight', 'delayed', 'sprint', 'review', 'your', 'code', '123456', '!!!', '...',
    're:', 'fwd:', 'weekend',
]


def varied_notifications(n: int, seed: int = 0) -> list[Notification]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        body = " ".join(rng.choices(WORDS, k=rng.choice([0, 1, 3, 8, 20, 60, 400])))
        title = " ".join(rng.choices(WORDS, k=rng.randint(0, 6)))
        if not title.strip() and not body.strip():
            body = "ping"
        out.append(Notification(id=str(i), app=rng.choice(APPS) or None, title=title or None, body=body or None,
                                sender=rng.choice(["Ann", "noreply@bank.com", None])))
    return out


@pytest.fixture(scope="module")
def classifier(tiny_classifier: Callable[..., Classifier]) -> Classifier:
    return tiny_classifier(max_input_tokens=128, max_batch_size=32)


@dataclass(frozen=True)
class Oracle:
    """The README's definitions computed from scratch: a plain forward over the whole prompt and each answer."""

    answer: tuple[str, int]  # greedy decoding restricted to the valid answers
    folder: float  # P(chosen folder), renormalised over the valid answers
    priority: float  # P(chosen priority | chosen folder)


def answer_sequences(tokenizer: Any) -> dict[tuple[str, int], list[int]]:
    """Each valid answer encoded on its own: encode(format_answer(f, p)) + <|im_end|> (no trie involved)."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    return {(f, p): [*tokenizer.encode(format_answer(f, p), add_special_tokens=False), end]
            for f in FOLDERS for p in PRIORITIES}


def oracle(classifier: Classifier, notification: Notification) -> Oracle:
    tokenizer = classifier.tokenizer
    user, _ = render_user_message(notification, tokenizer, classifier.settings.max_input_tokens)
    prompt = tokenizer.encode(render_prompt(tokenizer, user), add_special_tokens=False)  # the whole prompt text
    answers = answer_sequences(tokenizer)
    width = max(len(sequence) for sequence in answers.values())
    device = classifier.device
    ids = torch.tensor([seq + [classifier.pad_id] * (width - len(seq)) for seq in answers.values()], device=device)
    mask = torch.tensor([[1] * (len(prompt) + len(seq)) + [0] * (width - len(seq)) for seq in answers.values()],
                        device=device)
    vocabulary = sorted({t for seq in answers.values() for t in seq})  # the output layer is read only here
    column = {token: i for i, token in enumerate(vocabulary)}
    body, head = classifier.model.model, classifier.model.lm_head.weight[vocabulary]
    with torch.inference_mode():  # the whole prompt, then every answer teacher-forced after it (HF's own cache)
        cache = DynamicCache()
        name = "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"
        last = body(input_ids=torch.tensor([prompt], device=device), use_cache=True, **{name: cache})
        cache.batch_repeat_interleave(len(answers))
        rest = body(input_ids=ids, attention_mask=mask, use_cache=True, **{name: cache}).last_hidden_state
        hidden = torch.cat([last.last_hidden_state[:, -1:].expand(len(answers), -1, -1), rest], dim=1)
        logits = (hidden @ head.T).float().cpu()  # [12, answer length + 1, T]: position t predicts token t

    def allowed(prefix: list[int]) -> list[int]:
        return sorted({seq[len(prefix)] for seq in answers.values()
                       if seq[:len(prefix)] == prefix and len(seq) > len(prefix)})

    def step_logits(prefix: list[int]) -> torch.Tensor:  # logits after the prompt + prefix (any row that has it)
        row = next(i for i, seq in enumerate(answers.values()) if seq[:len(prefix)] == prefix)
        return logits[row, len(prefix)]

    probability = {}
    for key, sequence in answers.items():  # the restricted probability of each whole answer
        p = 1.0
        for t, token in enumerate(sequence):
            choices = allowed(sequence[:t])
            restricted = step_logits(sequence[:t])[[column[c] for c in choices]]
            p *= torch.softmax(restricted, 0)[choices.index(token)].item()
        probability[key] = p
    prefix: list[int] = []
    while not any(seq == prefix for seq in answers.values()):
        choices = allowed(prefix)
        scores = step_logits(prefix)[[column[c] for c in choices]].tolist()
        prefix.append(choices[max(range(len(choices)), key=lambda i: (scores[i], -i))])  # ties: lowest id
    answer = next(key for key, seq in answers.items() if seq == prefix)
    folder = sum(v for (f, _), v in probability.items() if f == answer[0])
    return Oracle(answer, folder, probability[answer] / folder)


def restricted_greedy(classifier: Classifier, notification: Notification) -> tuple[str, int]:
    return oracle(classifier, notification).answer


def test_constrained_equals_restricted_greedy_and_confidence_is_the_readme_definition(
        classifier: Classifier) -> None:
    notifications = varied_notifications(200)
    results = classifier.classify(notifications)
    expected = [oracle(classifier, n) for n in notifications]
    got = [(r.folder, r.priority) for r in results]
    assert got == [e.answer for e in expected]
    # A random model is the hard case only if its answers vary with the input.
    assert len(set(got)) >= 3
    for result, truth in zip(results, expected, strict=True):
        assert result.confidence.folder == pytest.approx(truth.folder, abs=2e-4)
        assert result.confidence.priority == pytest.approx(truth.priority, abs=2e-4)
        assert result.priority_label == {1: "Low", 2: "Medium", 3: "High"}[result.priority]
    # Confidence moves with the input: a constant stand-in would fail here as well as above.
    assert len({round(r.confidence.folder or 0, 3) for r in results}) > 10


def test_results_do_not_depend_on_batching(classifier: Classifier, tiny_classifier: Callable[..., Classifier]
                                           ) -> None:
    notifications = varied_notifications(40, seed=3)
    batched = classifier.classify(notifications)
    single = tiny_classifier(max_input_tokens=128, max_batch_size=1)
    one_by_one = single.classify(notifications)
    assert [(r.id, r.folder, r.priority) for r in batched] == [(r.id, r.folder, r.priority) for r in one_by_one]
    for a, b in zip(batched, one_by_one, strict=True):
        assert a.confidence.folder == pytest.approx(b.confidence.folder, abs=1e-4)


def test_confidence_is_a_probability_and_results_keep_input_order(classifier: Classifier) -> None:
    notifications = varied_notifications(30, seed=5)
    results = classifier.classify(notifications)
    assert [r.id for r in results] == [n.id for n in notifications]
    for r in results:
        assert r.decoding == "constrained"
        assert r.confidence.folder is not None and 0.25 <= r.confidence.folder <= 1.0
        assert r.confidence.priority is not None and 1 / 3 <= r.confidence.priority <= 1.0


def test_system_prefix_is_computed_once(classifier: Classifier) -> None:
    classifier.classify(varied_notifications(1, seed=6))  # the prefix is computed here, whatever ran before
    seen: list[int] = []
    handle = classifier.model.model.embed_tokens.register_forward_hook(
        lambda _m, args, _o: seen.append(args[0].shape[1]))
    try:
        classifier.classify(varied_notifications(10, seed=7))
        classifier.classify(varied_notifications(10, seed=8))
    finally:
        handle.remove()
    prefix = len(classifier.prefix_ids)
    assert prefix > 100
    assert prefix not in seen  # the prefix was computed earlier and reused
    assert len(seen) == 2  # one forward pass per batch: every choice point is read from it


def test_long_bodies_are_truncated_not_rejected(classifier: Classifier) -> None:
    huge = Notification(id="long", title="Quarterly report", body="numbers " * 5000)
    result = classifier.classify([huge])[0]
    assert result.truncated
    assert classifier.count_tokens(huge) <= len(classifier.prefix_ids) + 128 + 20


def test_generate_mode_falls_back_to_the_constrained_answer(tiny_classifier: Callable[..., Classifier],
                                                             classifier: Classifier) -> None:
    generator = tiny_classifier(max_input_tokens=128, decoding="generate")
    notifications = varied_notifications(12, seed=9)
    results = generator.classify(notifications)
    # A random model does not write JSON: every item falls back to scoring and gets the same answer.
    # (The metric that counts these, notif_parse_failures_total: tests/integration/test_serve_model.py.)
    assert {r.decoding for r in results} == {"generate_fallback"}
    assert [(r.folder, r.priority) for r in results] == [
        (r.folder, r.priority) for r in classifier.classify(notifications)]


def test_nf4_runs_on_the_cpu(tiny_classifier: Callable[..., Classifier]) -> None:
    nf4 = tiny_classifier(quantization="nf4", max_input_tokens=64)
    assert "Linear4bit" in type(nf4.model.model.layers[0].self_attn.q_proj).__name__
    for decoding in ("constrained", "generate"):
        runner = tiny_classifier(quantization="nf4", max_input_tokens=64, decoding=decoding)
        results = runner.classify(varied_notifications(6, seed=11))
        assert len(results) == 6
        assert all(r.folder in {"Work", "Personal", "Promotions", "Alerts"} for r in results)
