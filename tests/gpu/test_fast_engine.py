"""The fast engine on a CUDA GPU: exact in float32 on both of its routes, agreement in bf16 and NF4 reported.

Run by scripts/gpu_check.sh. Short passes replay a CUDA graph, long ones use compiled FlexAttention; the
float32 checks cover each route against the reference engine on the same GPU.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.integration.test_engine import assert_agree, hard_notifications
from worker.model.classifier import Classifier
from worker.model.loading import load_model
from worker.settings import Settings

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def cuda_engines(model_dir: Any, **overrides: Any) -> tuple[Classifier, Classifier]:
    settings = Settings.model_validate({"model": str(model_dir), "device": "cuda", "max_input_tokens": 128,
                                        "engine": "fast", **overrides})
    loaded = load_model(settings)
    return Classifier(loaded, settings), Classifier(loaded, settings.with_overrides(engine="reference"))


def test_both_routes_equal_the_reference_in_float32(tiny_model_dir: Any) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    fast, reference = cuda_engines(tiny_model_dir, quantization="none", dtype="float32")
    engine = fast.engine
    assert engine is not None and engine.graphs is not None and engine.attention == "flex"
    prompts = [fast.prepare(n) for n in hard_notifications(128)]
    short, long = prompts[:4], prompts
    assert engine.prepare(fast._trunks(short)).route == "graph"
    assert engine.prepare(fast._trunks(long)).route == "flex"
    assert_agree(fast, reference, short)
    assert_agree(fast, reference, long)


@pytest.mark.parametrize("quantization", ["nf4", "none"])
def test_bf16_and_nf4_agree_with_the_reference(tiny_model_dir: Any, quantization: str) -> None:
    fast, reference = cuda_engines(tiny_model_dir, quantization=quantization)
    notifications = hard_notifications(200, seed=3)
    got, expected = fast.classify(notifications), reference.classify(notifications)
    differ = sum((a.folder, a.priority) != (b.folder, b.priority) for a, b in zip(got, expected, strict=True))
    change = max(abs(a.confidence.folder - b.confidence.folder)  # type: ignore[operator]
                 for a, b in zip(got, expected, strict=True))
    print(f"{quantization}: {differ}/200 answers differ, largest folder confidence change {change:.4f}")
    assert differ <= 6  # bf16 rounding in another order: near-ties may flip, nothing more


def test_a_swap_captures_its_graphs_while_batches_are_read_back(tiny_model_dir: Any, tmp_path: Any) -> None:
    """With batches in flight the reader thread waits on a batch's CUDA event while the inference thread
    swaps the adapter, which captures the new engine's CUDA graphs: the capture must hold, the results too."""
    import threading

    from tests.integration.adapters import make_adapter
    from worker.contract import contract_fingerprint

    paths = {name: make_adapter(str(tiny_model_dir), tmp_path / name, contract=contract_fingerprint(), seed=seed)
             for name, seed in (("a", 1), ("b", 2))}
    settings = Settings.model_validate({"model": str(tiny_model_dir), "device": "cuda", "max_input_tokens": 128,
                                        "engine": "fast", "quantization": "nf4", "adapter": str(paths["a"]),
                                        "max_batch_size": 16})
    classifier = Classifier.from_settings(settings)
    notes = hard_notifications(64, seed=5)
    expected = [(r.folder, r.priority, r.adapter_id) for r in classifier.classify(notes)]
    launched = [classifier.launch(notes) for _ in range(3)]  # 12 passes queued on the stream
    read: list[list[Any]] = []
    reader = threading.Thread(target=lambda: read.extend(collect() for collect in launched))
    reader.start()
    classifier.swap_adapter(str(paths["b"]))
    reader.join(60)
    assert classifier.engine is not None and classifier.engine.graphs is not None  # captured, not fallen back
    assert [[(r.folder, r.priority, r.adapter_id) for r in results] for results in read] == [expected] * 3
    swapped = classifier.classify(notes)
    assert {r.adapter_id for r in swapped} != {e[2] for e in expected}
