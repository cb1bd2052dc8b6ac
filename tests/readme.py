"""What README.md promises, read from README.md itself, so that tests pin the README and not the code's own lists."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_text() -> str:
    return README.read_text(encoding="utf-8")


def readme_metrics() -> dict[str, frozenset[str]]:
    """The serve section's **Metrics** bullet: metric name -> its label names."""
    text = readme_text()
    start = text.index("- **Metrics**")
    bullet = text[start:text.index("\n- **", start + 1)]
    found = re.findall(r"`(notif_[a-z_]+)(?:\{([a-z_,]+)\})?`", bullet)
    return {name: frozenset(labels.split(",")) if labels else frozenset() for name, labels in found}


def readme_settings_rows() -> list[str]:
    """The configuration table's rows (the `| `NOTIF_...` |` lines), as written."""
    return [line for line in readme_text().splitlines() if line.startswith("| `NOTIF_")]
