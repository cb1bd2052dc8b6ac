"""The classifier on a tiny random-weight Qwen3 with the real tokenizer: exactness, modes, prefix reuse."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
import torch

from worker.contract import Notification, render_prompt, render_user_message
from worker.model.classifier import Classifier
from worker.model.loading import load_model
from worker.settings import Settings

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
def classifier(tiny_model_dir: Any) -> Classifier:
    settings = Settings.model_validate({"model": str(tiny_model_dir), "quantization": "none", "device": "cpu",
                                        "max_input_tokens": 128, "max_batch_size": 32})
    return Classifier.from_settings(settings)


def restricted_greedy(classifier: Classifier, notification: Notification) -> tuple[str, int]:
    """The reference definition: HF generate, greedy, allowed tokens limited to the valid answers' trie."""
    user, _ = render_user_message(notification, classifier.tokenizer, classifier.settings.max_input_tokens)
    ids = classifier.tokenizer(render_prompt(classifier.tokenizer, user), return_tensors="pt",
                               add_special_tokens=False).input_ids.to(classifier.device)
    start = ids.shape[1]
    out = classifier.model.generate(
        ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=24,
        pad_token_id=classifier.pad_id, eos_token_id=classifier.eos_id,
        prefix_allowed_tokens_fn=lambda _, seq: classifier.trie.allowed(seq[start:].tolist()),
    )
    tokens = out[0, start:].tolist()
    for answer, sequence in classifier.trie.sequences.items():
        if tokens == sequence:
            return answer
    raise AssertionError(f"restricted generation left the trie: {tokens}")


def test_constrained_equals_restricted_greedy_generation(classifier: Classifier) -> None:
    notifications = varied_notifications(200)
    results = classifier.classify(notifications)
    expected = [restricted_greedy(classifier, n) for n in notifications]
    got = [(r.folder, r.priority) for r in results]
    assert got == expected
    # A random model is the hard case only if its answers vary with the input.
    assert len(set(got)) >= 3


def test_results_do_not_depend_on_batching(classifier: Classifier, make_settings: Callable[..., Settings]
                                           ) -> None:
    notifications = varied_notifications(40, seed=3)
    batched = classifier.classify(notifications)
    single = Classifier(load_model(make_settings(max_input_tokens=128)), make_settings(max_batch_size=1,
                                                                                     max_input_tokens=128))
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


def test_generate_mode_counts_parse_failures_and_falls_back(tiny_model_dir: Any,
                                                            classifier: Classifier) -> None:
    settings = Settings.model_validate({"model": str(tiny_model_dir), "quantization": "none", "device": "cpu",
                                        "max_input_tokens": 128, "decoding": "generate"})
    generator = Classifier(load_model(settings), settings)
    notifications = varied_notifications(12, seed=9)
    results = generator.classify(notifications)
    # A random model does not write JSON: every item falls back to scoring and gets the same answer.
    assert {r.decoding for r in results} == {"generate_fallback"}
    assert [(r.folder, r.priority) for r in results] == [
        (r.folder, r.priority) for r in classifier.classify(notifications)]


def test_nf4_runs_on_the_cpu(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(quantization="nf4", max_input_tokens=64)
    nf4 = Classifier.from_settings(settings)
    assert "Linear4bit" in type(nf4.model.model.layers[0].self_attn.q_proj).__name__
    for decoding in ("constrained", "generate"):
        runner = Classifier(load_model(settings), settings.with_overrides(decoding=decoding))
        results = runner.classify(varied_notifications(6, seed=11))
        assert len(results) == 6
        assert all(r.folder in {"Work", "Personal", "Promotions", "Alerts"} for r in results)
