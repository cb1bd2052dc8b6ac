"""The output schema, pinned: the README's example result is what the worker writes, key for key and type for type."""

from __future__ import annotations

import json
import re

from tests.readme import readme_text
from worker.contract import ClassificationResult, Notification
from worker.dev.instant import InstantClassifier

# The README: "priority (1 low, 2 medium, 3 high)" and the label beside it.
LABELS = {1: "Low", 2: "Medium", 3: "High"}
TYPES: dict[str, type | tuple[type, ...]] = {
    "id": (str, type(None)), "folder": str, "priority": int, "priority_label": str, "confidence": dict,
    "decoding": str, "truncated": bool, "model": str, "adapter_id": (str, type(None)), "review": bool,
    "contract_version": str,
}


def readme_example() -> dict[str, object]:
    text = readme_text()
    block = re.search(r"\*\*Output\*\*.*?```json\n(.*?)```", text, re.S)
    assert block, "the README's output example could not be found"
    value: dict[str, object] = json.loads(block.group(1))
    return value


def test_the_readme_example_round_trips_unchanged() -> None:
    example = readme_example()
    result = ClassificationResult.model_validate(example)
    assert json.loads(result.to_json_bytes()) == example
    assert list(json.loads(result.to_json_bytes())) == list(example)  # the same keys in the same order


def test_a_result_has_the_readme_keys_types_and_a_consistent_label() -> None:
    example = readme_example()
    notifications = [Notification(id=f"n{i}", title=f"message {i}", body="x" * i) for i in range(60)]
    results = [json.loads(r.to_json_bytes()) for r in InstantClassifier().classify(notifications)]
    assert {r["priority"] for r in results} == {1, 2, 3}
    for result in results:
        assert list(result) == list(example)
        for key, kind in TYPES.items():
            assert isinstance(result[key], kind) and not (kind is int and isinstance(result[key], bool)), key
        assert result["priority_label"] == LABELS[result["priority"]]
        assert set(result["confidence"]) == {"folder", "priority"}
    assert set(TYPES) == set(example)
