"""Training, evaluation and serving render the same prompt, byte for byte and token for token."""

from __future__ import annotations

from typing import Any

import pytest

from worker.contract import (
    Notification,
    format_answer,
    render_prompt,
    render_training_text,
    render_user_message,
)
from worker.model.classifier import Classifier
from worker.settings import Settings

pytestmark = pytest.mark.integration

SAMPLES = [
    Notification(body="plain text body"),
    Notification(app="Slack", sender="Ann", title="Standup moved", body="to 10:30 tomorrow"),
    Notification(app="Bank", title="Card used abroad 💳", body="€2,300 at 東京 — was this you?"),
    Notification(title="  leading and trailing spaces  ", body="\n\nnewlines\n\ninside\n"),
    Notification(title="long", body="word " * 3000),
]


@pytest.fixture(scope="module")
def classifier(tiny_model_dir: Any) -> Classifier:
    return Classifier.from_settings(Settings.model_validate(
        {"model": str(tiny_model_dir), "quantization": "none", "device": "cpu"}))


@pytest.mark.parametrize("notification", SAMPLES)
def test_training_evaluation_and_serving_share_one_prompt(classifier: Classifier, qwen3_tokenizer: Any,
                                                          notification: Notification) -> None:
    budget = classifier.settings.max_input_tokens
    user, _ = render_user_message(notification, qwen3_tokenizer, budget)
    serving = render_prompt(qwen3_tokenizer, user)
    prompt, completion = render_training_text(qwen3_tokenizer, user, format_answer("Alerts", 3))
    assert prompt == serving
    assert completion == '{"folder": "Alerts", "priority": 3}<|im_end|>\n'
    # What the classifier feeds the model (cached prefix + per-notification suffix) is that prompt's tokens.
    prepared = classifier.prepare(notification)
    fed = [*classifier.prefix_ids, *prepared.suffix_ids]
    assert fed == qwen3_tokenizer.encode(serving, add_special_tokens=False)
    assert qwen3_tokenizer.decode(fed) == serving


def test_thinking_is_disabled_by_an_empty_think_block(qwen3_tokenizer: Any) -> None:
    prompt = render_prompt(qwen3_tokenizer, "Body: hi")
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert "/no_think" not in prompt
    assert prompt.startswith("<|im_start|>system\nYou are a notification classifier.")


def test_truncation_respects_the_token_budget(qwen3_tokenizer: Any) -> None:
    n = Notification(app="Mail", title="t " * 400, body="b " * 4000)
    for budget in (32, 100, 384):
        text, truncated = render_user_message(n, qwen3_tokenizer, budget)
        assert truncated
        assert len(qwen3_tokenizer.encode(text, add_special_tokens=False)) <= budget
        assert text.startswith("App: Mail\n")
