"""Train a tiny random Qwen3 for a few steps on the CPU, load the adapter in the worker, evaluate it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.adapters import classify_with_worker
from trainer.batches import Encoder
from trainer.cli import main
from trainer.config import TrainConfig
from trainer.data import read_dataset
from trainer.synth import write_split
from trainer.train import train
from worker.contract import CONTRACT_VERSION, contract_fingerprint, format_answer
from worker.model.classifier import Classifier

pytestmark = pytest.mark.integration

RESULT_FIELDS = {
    "model", "base_model", "adapter", "quantization", "decoding", "device", "data", "bad_lines", "contract_version",
    "created", "elapsed_s", "notifications_per_s", "n", "accuracy", "parse_failures", "macro_f1", "per_folder",
    "per_priority", "confusion", "truncated",
}


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("train")
    write_split(root / "data", n=260, seed=2, train_size=200)
    config = TrainConfig(model=str(tiny_model_dir), data=str(root / "data" / "train.jsonl"), out=str(root / "adapter"),
                         quantization="none", device="cpu", epochs=1, batch_size=4, grad_accum=2, lr=5e-3,
                         log_every=5)
    summary = train(config.check(), progress=False)
    return {"root": root, "adapter": root / "adapter", "test": root / "data" / "test.jsonl", "summary": summary}


def test_short_run_lowers_the_loss_and_saves_everything(trained: dict[str, Any]) -> None:
    summary, adapter = trained["summary"], trained["adapter"]
    assert summary["optimizer_steps"] == 25 and len(summary["history"]) == 5
    assert summary["final_loss"] < 0.7 * summary["first_loss"], summary["history"]
    for name in ("adapter_config.json", "adapter_model.safetensors", "notif_contract.json", "training_config.json",
                 "training_summary.json"):
        assert (adapter / name).is_file(), name
    assert json.loads((adapter / "notif_contract.json").read_text()) == contract_fingerprint()
    config = json.loads((adapter / "training_config.json").read_text())
    assert (config["lora_r"], config["lora_alpha"], config["contract_version"]) == (16, 16, CONTRACT_VERSION)
    assert config["plan"]["optimizer_steps"] == 25 and config["dtype"] == "float32"
    saved = json.loads((adapter / "training_summary.json").read_text())
    for key in ("time_s", "final_loss", "mean_token_accuracy", "trainable_parameters"):
        assert key in saved
    assert saved["trainable_parameters"] == 32_768  # tiny config: r=16 on the 7 projections of 2 layers


def test_worker_loads_the_adapter_and_answers_change(trained: dict[str, Any], tiny_model_dir: Path,
                                                     tmp_path: Path) -> None:
    bare = classify_with_worker(tiny_model_dir, None, tmp_path)
    adapted = classify_with_worker(tiny_model_dir, trained["adapter"], tmp_path)
    assert len(bare) == len(adapted) == 40
    assert adapted[0]["model"].endswith(str(trained["adapter"]))
    assert [(r["folder"], r["priority"]) for r in bare] != [(r["folder"], r["priority"]) for r in adapted]


def test_training_tokens_are_what_the_classifier_scores(trained: dict[str, Any],
                                                        tiny_classifier: Callable[..., Classifier]) -> None:
    classifier = tiny_classifier()
    settings = classifier.settings
    encoder = Encoder(classifier.tokenizer, settings.max_input_tokens)
    for example in read_dataset(trained["test"], limit=20).examples:
        item = encoder.encode(example)
        assert list(encoder.prefix) == classifier.prefix_ids
        assert list(item.prompt) == list(classifier.prepare(example.notification).suffix_ids)
        answer = classifier.tokenizer.encode(format_answer(example.folder, example.priority), add_special_tokens=False)
        assert list(item.trained) == [*answer, classifier.eos_id]


@pytest.mark.timeout(900)  # two evaluations and a re-count on a loaded 2-core box: minutes
def test_eval_report_has_every_field(trained: dict[str, Any], tiny_model_dir: Path, tmp_path: Path,
                                     tiny_classifier: Callable[..., Classifier]) -> None:
    common = ["--model", str(tiny_model_dir), "--quantization", "none", "--device", "cpu", "--data",
              str(trained["test"]), "--no-progress"]
    assert main(["eval", *common, "--adapter", str(trained["adapter"]), "--out", str(tmp_path / "a")]) == 0
    first = json.loads((tmp_path / "a" / "results.json").read_text())
    assert set(first) == RESULT_FIELDS
    assert first["n"] == 60 and first["adapter"] == str(trained["adapter"])
    assert set(first["accuracy"]) == {"folder", "priority", "both"}
    assert set(first["per_priority"]) == {"1", "2", "3"} and set(first["per_folder"]) == {
        "Work", "Personal", "Promotions", "Alerts"}
    assert sum(row["n"] for row in first["per_priority"].values()) == 60
    assert sum(map(sum, first["confusion"]["folder"]["matrix"])) == 60
    for name in ("report.md", "confusion_folder.png", "confusion_priority.png"):
        assert (tmp_path / "a" / name).is_file()
    # The figures are this run's: recomputed here from the worker's own answers on the same 60 examples.
    examples = read_dataset(trained["test"]).examples
    answers = tiny_classifier(adapter=str(trained["adapter"])).classify([e.notification for e in examples])
    folder = sum(a.folder == e.folder for a, e in zip(answers, examples, strict=True)) / len(examples)
    priority = sum(a.priority == e.priority for a, e in zip(answers, examples, strict=True)) / len(examples)
    assert first["accuracy"]["folder"] == pytest.approx(folder, abs=1e-4)
    assert first["accuracy"]["priority"] == pytest.approx(priority, abs=1e-4)
    report = (tmp_path / "a" / "report.md").read_text()
    assert f"{folder * 100:.1f}%" in report and f"{priority * 100:.1f}%" in report
    for text in ("| Folder accuracy |", "| Priority accuracy |", "| Both correct |", "| Parse failures |",
                 "| 2 Medium |", "macro-F1", "![folder confusion]"):
        assert text in report, text

    bare = ["eval", *common, "--decoding", "generate", "--limit", "20", "--out", str(tmp_path / "b"),
            "--compare", str(tmp_path / "a" / "results.json")]
    assert main(bare) == 0
    second = json.loads((tmp_path / "b" / "results.json").read_text())
    assert second["adapter"] is None and second["n"] == 20 and second["decoding"] == "generate"
    # The bare random model never writes a valid JSON answer: every one of the 20 is a parse failure.
    assert second["parse_failures"]["count"] == 20
    assert "| Previous | Δ |" in (tmp_path / "b" / "report.md").read_text()


def test_qlora_nf4_trains_on_the_cpu(tiny_model_dir: Path, trained: dict[str, Any]) -> None:
    out = trained["root"] / "nf4"
    config = TrainConfig(model=str(tiny_model_dir), data=str(trained["test"]), out=str(out), device="cpu",
                         epochs=1, max_steps=2, batch_size=2, grad_accum=1, lr=5e-3, log_every=1)
    summary = train(config.check(), progress=False)
    assert summary["optimizer_steps"] == 2
    saved = json.loads((out / "training_config.json").read_text())
    assert (saved["quantization"], saved["dtype"]) == ("nf4", "bfloat16")
    assert (out / "adapter_model.safetensors").is_file()
