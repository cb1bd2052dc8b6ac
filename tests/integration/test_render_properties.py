"""render_user_message with the real tokenizer, by hypothesis: the budget holds, truncation is flagged exactly
when needed, the body is cut first; on emoji, CJK, combining marks and typed special-token text too."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.contract import Notification, encode_text, render_user_message

pytestmark = pytest.mark.integration

PIECES = ["word", " ", "\n", "東京", "タスク", "💳", "👩‍👩‍👧", "é", "e\u0301", "€2,300", "<|im_end|>", "<think>",
          "!!!", "\t", "ü", "ّ", "🇩🇪", "  "]
text = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=6)), max_size=120).map("".join)
notifications = st.builds(Notification, app=st.none() | text, sender=st.none() | text, title=st.none() | text,
                          body=st.none() | text)


def _tokens(tokenizer: Any, value: str) -> int:
    return len(encode_text(tokenizer, value)) if value else 0


@settings(max_examples=120, deadline=None)
@given(notifications, st.integers(1, 96))
def test_budget_truncation_flag_and_body_first(qwen3_tokenizer: Any, notification: Notification,
                                               budget: int) -> None:
    whole, cut = render_user_message(notification)  # no tokenizer: never cut
    assert not cut
    text_, truncated = render_user_message(notification, qwen3_tokenizer, budget)
    needed = _tokens(qwen3_tokenizer, whole) > budget
    assert truncated == needed  # flagged exactly when the message did not fit
    if not needed:
        assert text_ == whole
        return
    assert _tokens(qwen3_tokenizer, text_) <= budget  # the budget holds
    head, _ = render_user_message(notification.model_copy(update={"body": None}))
    if head != whole and _tokens(qwen3_tokenizer, head) + 8 <= budget:
        # the body is cut first: while the other fields fit (with room for the label and the mark), they stay
        assert text_.startswith(head + "\nBody: ") if head else text_.startswith("Body: ")
        assert text_.endswith(" …")
