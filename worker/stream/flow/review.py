"""Review routing (pure): which results a person should check, and the record the review topic gets.

A result whose folder or priority confidence is below NOTIF_REVIEW_BELOW (or has none: a generated
answer off the canonical token path) is marked ``"review": true`` in the output topic and also sent
to NOTIF_REVIEW_TOPIC with the same key, its value the result plus ``"input"``: the decoded
notification's fields, so a reviewer needs no second lookup. The outbox commits the input's offset
only when both publications are acknowledged (worker/stream/flow/work.py, Work.pending).
"""

from __future__ import annotations

import json

from worker.contract import ClassificationResult, Notification


def review_reason(result: ClassificationResult, below: float) -> str | None:
    """Why ``result`` needs a person (a label of notif_review_total), or None when it is confident enough."""
    folder, priority = result.confidence.folder, result.confidence.priority
    if folder is None or priority is None:
        return "unscored"
    low_folder, low_priority = folder < below, priority < below
    if low_folder and low_priority:
        return "both"
    if low_folder:
        return "folder"
    if low_priority:
        return "priority"
    return None


def review_value(result: ClassificationResult, notification: Notification) -> bytes:
    """The review topic's value: the published result plus the input's fields (absent ones left out)."""
    record = result.model_dump(mode="json")
    record["input"] = notification.model_dump(exclude_none=True)
    return json.dumps(record, ensure_ascii=False).encode("utf-8")
