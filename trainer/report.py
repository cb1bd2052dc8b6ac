"""report.md and the confusion-matrix PNGs from a results.json, laid out to compare with the reference.

Tables: overall (this run beside the reference Qwen3-0.6B QLoRA and the earlier 270M model, plus a
previous run with its difference when given), per priority, per folder, and both confusion matrices.
PNGs need matplotlib (the `plots` extra); without it the report says so and keeps the text tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# DESIGN.md's reference numbers on 500 test notifications.
REFERENCE = {"folder": 0.940, "priority": 0.830, "both": 0.782, "parse_failures": 0.0, "medium": 0.664}
PREVIOUS_MODEL = {"folder": 0.906, "priority": 0.546, "both": 0.490}  # FunctionGemma 270M
PNG_FILES = {"folder": "confusion_folder.png", "priority": "confusion_priority.png"}
RELIABILITY_PNG = "reliability.png"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _delta(now: float, before: float | None) -> str:
    return "—" if before is None else f"{100 * (now - before):+.1f} pp"


def overall_table(results: dict[str, Any], previous: dict[str, Any] | None) -> list[str]:
    head = "| Metric | This run | Reference Qwen3-0.6B QLoRA | FunctionGemma 270M |"
    rule = "|---|---|---|---|"
    if previous:
        head += " Previous | Δ |"
        rule += "---|---|"
    rows = [head, rule]
    names = {"folder": "Folder accuracy", "priority": "Priority accuracy", "both": "Both correct"}
    for key, name in names.items():
        now = results["accuracy"][key]
        row = f"| {name} | **{_pct(now)}** | {_pct(REFERENCE[key])} | {_pct(PREVIOUS_MODEL[key])} |"
        if previous:
            before = previous["accuracy"][key]
            row += f" {_pct(before)} | {_delta(now, before)} |"
        rows.append(row)
    failures = results["parse_failures"]
    row = f"| Parse failures | {failures['count']} ({_pct(failures['rate'])}) | 0 (0.0%) | — |"
    if previous:
        before = previous["parse_failures"]
        row += f" {before['count']} ({_pct(before['rate'])}) | {_delta(failures['rate'], before['rate'])} |"
    rows.append(row)
    for key in ("folder", "priority"):
        now = results["macro_f1"][key]
        row = f"| {key.capitalize()} macro-F1 | {now:.3f} | — | — |"
        if previous:
            before = previous["macro_f1"][key]
            row += f" {before:.3f} | {now - before:+.3f} |"
        rows.append(row)
    return rows


def priority_table(results: dict[str, Any], previous: dict[str, Any] | None) -> list[str]:
    rows = ["| Priority | n | Accuracy | Reference | Precision | F1 |" + (" Previous |" if previous else ""),
            "|---|---|---|---|---|---|" + ("---|" if previous else "")]
    for key, row in results["per_priority"].items():
        reference = _pct(REFERENCE["medium"]) if key == "2" else "—"
        line = (f"| {key} {row['label']} | {row['n']} | **{_pct(row['accuracy'])}** | {reference} | "
                f"{_pct(row['precision'])} | {row['f1']:.3f} |")
        if previous:
            line += f" {_pct(previous['per_priority'].get(key, {}).get('accuracy'))} |"
        rows.append(line)
    return rows


def folder_table(results: dict[str, Any], previous: dict[str, Any] | None) -> list[str]:
    rows = ["| Folder | n | Accuracy | Precision | F1 |" + (" Previous |" if previous else ""),
            "|---|---|---|---|---|" + ("---|" if previous else "")]
    for key, row in results["per_folder"].items():
        line = f"| {key} | {row['n']} | **{_pct(row['accuracy'])}** | {_pct(row['precision'])} | {row['f1']:.3f} |"
        if previous:
            line += f" {_pct(previous['per_folder'].get(key, {}).get('accuracy'))} |"
        rows.append(line)
    return rows


def confusion_table(matrix: list[list[int]], labels: list[str]) -> list[str]:
    rows = ["| true \\ predicted | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for label, row in zip(labels, matrix, strict=True):
        rows.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    return rows


def plot_confusion(matrix: list[list[int]], labels: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2, 1.1 * len(labels) + 1.5))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > peak / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_plots(results: dict[str, Any], out: Path) -> bool:
    """The two confusion PNGs; False when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    for key, name in PNG_FILES.items():
        block = results["confusion"][key]
        plot_confusion(block["matrix"], block["labels"], f"{key} confusion (n={results['n']})", out / name)
    if "calibration" in results:
        from trainer.calibration import plot_reliability

        plot_reliability(results["calibration"], out / RELIABILITY_PNG)
    return True


def calibration_table(calibration: dict[str, Any], plots: bool) -> list[str]:
    """Temperatures and the expected calibration error before and after (from `eval --calibrate`)."""
    rows = [f"Fitted on {calibration['n']} notifications; ECE over {calibration['bins']} equal-width confidence "
            f"bins. Written to `{calibration['file']}`; the worker applies it to every confidence it publishes "
            "(answers do not change).", "",
            "| Decision | Temperature | ECE before | ECE after |", "|---|---|---|---|"]
    for decision, temperature in calibration["temperature"].items():
        rows.append(f"| {decision} | {temperature:g} | {calibration['ece_before'][decision]:.4f} | "
                    f"**{calibration['ece_after'][decision]:.4f}** |")
    return rows + (["", f"![reliability diagram]({RELIABILITY_PNG})"] if plots else [])


def render_report(results: dict[str, Any], previous: dict[str, Any] | None, plots: bool) -> str:
    adapter = results.get("adapter") or "none (bare base model)"
    lines = [
        "# Evaluation report", "",
        f"- model: `{results['base_model']}`, adapter: `{adapter}`, quantization: {results['quantization']}",
        f"- data: `{results['data']}`: {results['n']} notifications ({results['bad_lines']} bad lines skipped)",
        f"- decoding: {results['decoding']}, device: {results['device']}, "
        f"{results['notifications_per_s']} notifications/s, contract {results['contract_version']}",
        f"- created: {results['created']}"
        + (f"; compared with `{previous.get('model')}` ({previous.get('created')})" if previous else ""),
        "", "## Overall", "", *overall_table(results, previous),
        "", "## Per priority", "", *priority_table(results, previous),
        "", "## Per folder", "", *folder_table(results, previous),
        *(["", "## Calibration", "", *calibration_table(results["calibration"], plots)]
          if "calibration" in results else []),
        "", "## Confusion matrices (rows: true, columns: predicted)", "",
    ]
    for key, name in PNG_FILES.items():
        block = results["confusion"][key]
        lines += [f"### {key.capitalize()}", "", *confusion_table(block["matrix"], block["labels"]), ""]
        lines += [f"![{key} confusion]({name})", ""] if plots else []
    if not plots:
        lines.append("PNG plots skipped: install matplotlib (`pip install 'notif-triage[plots]'`).")
    return "\n".join(lines).rstrip() + "\n"


def write_report(results: dict[str, Any], out: Path, previous: dict[str, Any] | None = None) -> Path:
    plots = write_plots(results, out)
    path = out / "report.md"
    path.write_text(render_report(results, previous, plots))
    return path
