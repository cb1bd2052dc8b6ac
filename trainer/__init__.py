"""notif-triage trainer: synthetic data, QLoRA fine-tuning and evaluation of the classifier's adapter."""

from __future__ import annotations


class TrainerError(Exception):
    """Base class of the trainer's errors (data, training, evaluation); the CLI prints them and exits 2."""
