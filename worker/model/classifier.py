"""The batched classifier: notifications in, folder + priority + confidence out. Knows nothing of Kafka.

constrained (default): walks the answer trie with the model in one forward pass per batch (every choice
point fed side by side, notifications packed into rows: answer_trie.FeedPlan, layout), on top of a KV cache
of the system prompt computed once, reading only the logits of the tokens a choice can pick. Identical to
greedy decoding restricted to the 12 valid answers, so it cannot fail to parse. generate: free greedy
generation and strict JSON parsing, as the reference did; an answer that does not parse is counted and
re-scored by the constrained path.

Exceptions: InferenceError wraps anything the model raised during a batch (e.g. CUDA out of memory).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from worker.contract import (
    PRIORITY_LABELS,
    AnswerParseError,
    ClassificationResult,
    Confidence,
    Notification,
    PromptTokens,
    parse_answer,
    render_user_message,
)
from worker.model.adapters import Adapter, describe, load_beside
from worker.model.answer_trie import AnswerTrie, Branch, FeedPlan, greedy_branches, walk, walk_plan
from worker.model.engine import FastEngine, build_engine
from worker.model.layout import build_pass
from worker.model.loading import EOS_TOKEN, LoadedModel, ModelLoadError, load_model
from worker.model.planning import plan_batches
from worker.model.self_check import check_engine
from worker.protocol import Collect
from worker.settings import Settings

Answer = tuple[str, int, dict[str, float | None], str]  # folder, priority, confidence, decoding


class InferenceError(RuntimeError):
    """The model failed on a batch; the caller may split the batch and retry."""


@dataclass(frozen=True)
class Prompt:
    """A rendered notification: its tokens after the shared system prefix, and whether it was cut."""

    suffix_ids: tuple[int, ...]
    truncated: bool


class Classifier:
    """Classify batches of notifications with one loaded model. Call it from one thread at a time."""

    def __init__(self, loaded: LoadedModel, settings: Settings, *, engine: FastEngine | None = None) -> None:
        """`engine`: a fast engine already built on `loaded` (benchmarks share one); else built as settings say."""
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        self.name = loaded.name
        self.runtime = loaded.runtime  # device, torch/CUDA builds, resolved quantization: serve logs and exports it
        self.settings = settings
        self.eos_id: int = self.tokenizer.convert_tokens_to_ids(EOS_TOKEN)
        self.pad_id: int = self.tokenizer.pad_token_id
        self.trie = AnswerTrie(lambda text: self.tokenizer.encode(text, add_special_tokens=False), self.eos_id)
        self.prompt_tokens = PromptTokens.of(self.tokenizer)  # sender text tokenized as text, never as specials
        self.prefix_ids: list[int] = list(self.prompt_tokens.prefix)
        self._lock = threading.Lock()
        self._dtype = loaded.dtype
        self._cache_kwarg = _cache_kwarg(self.model)
        self.plan = FeedPlan.of(self.trie)
        self._slots = self.plan.read_slots()
        self._choice_tokens = sorted({t for node in self.plan.choice_nodes for t in node.choices})
        self._ancestors = torch.tensor(self.plan.ancestors(), dtype=torch.bool)
        self._additive_mask = getattr(self.model.config, "_attn_implementation", "sdpa") == "eager"
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        self._decoder = base.get_decoder()  # the transformer body; LoRA layers live inside it
        self._decoder_cache_kwarg = _cache_kwarg(self._decoder)
        self._head = base.get_output_embeddings()
        self._choice_head = (self._head.weight[self._choice_tokens].detach().clone()
                             if type(self._head) is torch.nn.Linear and self._head.bias is None else None)
        self.prepare = lru_cache(maxsize=8192)(self._prepare)
        self.serving = describe(settings.adapter, "" if settings.merge_adapter or not settings.adapter else "default")
        self._active = self.serving  # whose weights (prefix cache, engine, calibration) the next pass uses
        self._swaps = 0
        # NOTIF_ENGINE: the fast engine (engine.py) scores when it can run this model; else the code below
        self.serving.engine = engine if engine is not None and settings.engine != "reference" else self._build_engine()
        self.engine_info, self.engine_check = check_engine(self)  # first: the shadow gets an engine if serving kept one
        self.shadow = self._load_shadow(settings.shadow_adapter) if settings.shadow_adapter else None

    @property
    def engine(self) -> FastEngine | None:
        """The active adapter's fast engine (it holds that adapter's merged weights), or None: the reference."""
        return self._active.engine  # type: ignore[no-any-return]

    @engine.setter
    def engine(self, engine: FastEngine | None) -> None:
        self._active.engine = engine

    def _build_engine(self) -> FastEngine | None:
        return build_engine(self.model, self.settings, self._dtype, self.device, prefix_ids=self.prefix_ids,
                            plan=self.plan, read_slots=self._slots, choice_head=self._choice_head, pad_id=self.pad_id)

    @classmethod
    def from_settings(cls, settings: Settings) -> Classifier:
        return cls(load_model(settings), settings)

    # --- prompts ----------------------------------------------------------------------------------------

    def _prepare(self, notification: Notification) -> Prompt:
        user, truncated = render_user_message(notification, self.tokenizer, self.settings.max_input_tokens)
        return Prompt(self.prompt_tokens.suffix(user), truncated)

    def count_tokens(self, notification: Notification) -> int:
        return len(self.prefix_ids) + len(self.prepare(notification).suffix_ids)

    # --- entry point -------------------------------------------------------------------------------------

    @property
    def adapter_id(self) -> str | None:
        return self.serving.adapter_id

    def classify(self, notifications: Sequence[Notification]) -> list[ClassificationResult]:
        return self.launch(notifications)()

    def launch(self, notifications: Sequence[Notification]) -> Collect:
        """Start the batch's passes and return at once; the returned call waits for and reads their results.

        With the fast engine on a GPU the passes are queued on its stream, so the inference loop prepares and
        launches the next batch while these compute (worker/stream/flow/inference.py); the reference engine and
        the CPU compute here, and the returned call only hands the results over.
        """
        with self._lock:
            return self._launch(notifications)

    def classify_shadow(self, notifications: Sequence[Notification]) -> list[ClassificationResult]:
        """The shadow adapter's results for the same notifications (the serving adapter is active again after)."""
        if self.shadow is None:
            raise InferenceError("no shadow adapter is loaded (NOTIF_SHADOW_ADAPTER)")
        with self._lock:
            self._activate(self.shadow)
            try:
                collect = self._launch(notifications)
            finally:
                self._activate(self.serving)
        return collect()

    def swap_adapter(self, path: str) -> str:
        """Load the adapter at ``path`` beside the serving one, then serve it; returns its adapter_id.

        Called between two batches (on the inference thread). Any failure leaves the old adapter serving.
        """
        with self._lock:
            self._swaps += 1
            fresh = load_beside(self.model, path, f"serving-{self._swaps}")
            old = self.serving
            try:
                self._activate(fresh)
                fresh.engine = self._build_engine() if old.engine is not None else None
                with torch.inference_mode():
                    self._prefix_cache(1)  # the new adapter's system-prompt cache, before the next batch needs it
            except Exception as exc:
                self._activate(old)
                self.model.delete_adapter(fresh.name)
                raise ModelLoadError(f"adapter {path} failed its first pass: {type(exc).__name__}: {exc}") from exc
            self.serving = fresh
            self.model.delete_adapter(old.name)
            self.name = f"{self.settings.model}+{path}"
            return fresh.adapter_id or path

    def _load_shadow(self, path: str) -> Adapter:
        shadow = load_beside(self.model, path, "shadow")
        self._activate(shadow)
        try:
            shadow.engine = self._build_engine() if self.serving.engine is not None else None
        finally:
            self._activate(self.serving)
        return shadow

    def _activate(self, adapter: Adapter) -> None:
        if adapter.name and adapter is not self._active:
            self.model.set_adapter(adapter.name, inference_mode=True)  # default would make its weights trainable
        self._active = adapter

    def _launch(self, notifications: Sequence[Notification]) -> Collect:
        """Launch every planned pass of the batch with the active adapter; the returned call reads them back."""
        if not notifications:
            return list
        prompts = [self.prepare(n) for n in notifications]
        batches = plan_batches([len(p.suffix_ids) for p in prompts], max_size=self.settings.max_batch_size,
                               max_tokens=self.settings.max_batch_tokens)
        adapter = self._active  # a swap or the shadow may activate another before the results are read
        with _model_errors(), torch.inference_mode():
            answers = [self._start_batch([prompts[i] for i in batch], adapter) for batch in batches]

        def collect() -> list[ClassificationResult]:
            results: list[ClassificationResult | None] = [None] * len(prompts)
            with _model_errors():
                for batch, answer in zip(batches, answers, strict=True):
                    for i, (folder, priority, confidence, decoding) in zip(batch, answer(), strict=True):
                        results[i] = self._result(notifications[i], prompts[i], folder, priority, confidence,
                                                  decoding, adapter)
            return [r for r in results if r is not None]

        return collect

    def _start_batch(self, prompts: list[Prompt], adapter: Adapter) -> Callable[[], list[Answer]]:
        """One planned pass: launched on the fast engine (read back by the returned call), else computed now."""
        engine = self.engine
        if engine is None or self.settings.decoding != "constrained":
            answers = self._classify_batch(prompts)
            return lambda: answers
        pending = engine.launch(engine.prepare(self._trunks(prompts)))
        return lambda: _constrained(self._walk(pending.wait().tolist(), adapter))

    def _trunks(self, prompts: list[Prompt]) -> list[list[int]]:
        return [[*p.suffix_ids, *self.plan.trunk] for p in prompts]

    def _classify_batch(self, prompts: list[Prompt]) -> list[Answer]:
        if self.settings.decoding == "constrained":
            return _constrained(self.score(prompts))
        return self._generate(prompts)

    def _result(self, notification: Notification, prompt: Prompt, folder: str, priority: int,
                confidence: dict[str, float | None], decoding: str, adapter: Adapter) -> ClassificationResult:
        return ClassificationResult(
            id=notification.id, folder=folder, priority=priority, priority_label=PRIORITY_LABELS[priority],
            confidence=Confidence(folder=_round(confidence["folder"]), priority=_round(confidence["priority"])),
            decoding=decoding,  # type: ignore[arg-type]
            truncated=prompt.truncated, model=self._model_name(adapter), adapter_id=adapter.adapter_id,
        )

    def _model_name(self, adapter: Adapter) -> str:
        return f"{self.settings.model}+{adapter.path}" if adapter.path else self.settings.model

    # --- constrained: walk the answer trie ----------------------------------------------------------------

    def score(self, prompts: list[Prompt]) -> list[tuple[str, int, dict[str, float]]]:
        """Greedy decoding restricted to the valid answers, in ONE forward pass (see FeedPlan and layout)."""
        return self._walk(self._logits(prompts))

    def _logits(self, prompts: list[Prompt]) -> list[list[list[float]]]:
        if self.engine is not None:
            return self.engine.launch(self.engine.prepare(self._trunks(prompts))).wait().tolist()  # type: ignore[no-any-return]
        return self._reference_logits(prompts)

    def branches(self, notifications: Sequence[Notification]) -> list[list[Branch]]:
        """The logits of every branch the serving adapter's constrained answer takes (calibration's input)."""
        prompts = [self.prepare(n) for n in notifications]
        found: list[list[Branch]] = [[] for _ in prompts]
        batches = plan_batches([len(p.suffix_ids) for p in prompts], max_size=self.settings.max_batch_size,
                               max_tokens=self.settings.max_batch_tokens)
        with self._lock, torch.inference_mode():
            for batch in batches:
                readers = self._readers(self._logits([prompts[i] for i in batch]))
                for i, reader in zip(batch, readers, strict=True):
                    found[i] = greedy_branches(self.plan, reader)
        return found

    def _reference_logits(self, prompts: list[Prompt]) -> list[list[list[float]]]:
        """[N][S][C] choice-token logits by the transformers model itself (rows of layout.build_pass)."""
        plan = self.plan
        fed = build_pass(self._trunks(prompts), plan.tokens, plan.depths,
                         self._ancestors, self._slots, len(self.prefix_ids), self.pad_id)
        device = self.device
        mask = fed.mask.to(device)
        if self._additive_mask:
            mask = torch.zeros(mask.shape, dtype=self.model.dtype, device=device).masked_fill(
                ~mask, torch.finfo(self.model.dtype).min)
        out = self._decoder(input_ids=fed.input_ids.to(device), position_ids=fed.position_ids.to(device),
                            attention_mask={"full_attention": mask, "sliding_attention": mask}, use_cache=True,
                            **{self._decoder_cache_kwarg: self._prefix_cache(fed.input_ids.shape[0])})
        hidden = out.last_hidden_state[fed.read_rows.to(device), fed.read_cols.to(device)]  # [N * S, H]
        return self._choice_logits(hidden).float().view(len(prompts), len(self._slots), -1).cpu().tolist()

    def _readers(self, picked: list[list[list[float]]]) -> list[Callable[[int, list[int]], list[float]]]:
        slot_of = {slot: i for i, slot in enumerate(self._slots)}
        column = {token: i for i, token in enumerate(self._choice_tokens)}
        return [_reader(row, slot_of, column) for row in picked]

    def _walk(self, picked: list[list[list[float]]], adapter: Adapter | None = None
              ) -> list[tuple[str, int, dict[str, float]]]:
        """Each row's answer and confidences, calibrated with `adapter`'s temperatures (default: the active one)."""
        temperatures = (adapter or self._active).temperatures
        answers = []
        for reader in self._readers(picked):
            (folder, priority), confidence = walk_plan(self.plan, reader, temperatures)
            answers.append((folder, priority, confidence))
        return answers

    def _choice_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[M, choice tokens]: the output layer for the tokens a choice can pick, not the 151k vocabulary."""
        if self._choice_head is not None:
            return torch.nn.functional.linear(hidden, self._choice_head)
        return self._head(hidden)[:, self._choice_tokens]  # an adapted or quantized head: apply it whole

    def _prefix_cache(self, batch: int) -> Any:
        """A fresh KV cache holding the system prefix for `batch` rows (the prefix is computed once)."""
        from transformers import DynamicCache

        if self._active.prefix_kv is None:  # once per adapter: its LoRA changes the prompt's keys and values
            cache = DynamicCache()
            ids = torch.tensor([self.prefix_ids], device=self.device)
            self.model(input_ids=ids, use_cache=True, logits_to_keep=1, **{self._cache_kwarg: cache})
            layers: list[Any] = list(cache.layers)
            self._active.prefix_kv = [(layer.keys, layer.values) for layer in layers]
        fresh = DynamicCache()
        for index, (keys, values) in enumerate(self._active.prefix_kv):
            fresh.update(keys.expand(batch, -1, -1, -1), values.expand(batch, -1, -1, -1), index)
        return fresh

    # --- generate: free greedy decoding + strict parsing ------------------------------------------------

    def _generate(self, prompts: list[Prompt]) -> list[tuple[str, int, dict[str, float | None], str]]:
        from transformers import GenerationConfig

        sequences = [[*self.prefix_ids, *p.suffix_ids] for p in prompts]
        width = max(len(s) for s in sequences)
        ids = torch.tensor([[self.pad_id] * (width - len(s)) + s for s in sequences], device=self.device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=self.device)
        config = GenerationConfig(max_new_tokens=self.settings.max_new_tokens, do_sample=False,
                                  pad_token_id=self.pad_id, eos_token_id=self.eos_id)
        out = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                                  output_logits=True, return_dict_in_generate=True)
        new = out.sequences[:, width:].tolist()
        answers: list[tuple[str, int, dict[str, float | None], str] | None] = []
        failed: list[int] = []
        for r, tokens in enumerate(new):
            answer = self._parse_generated(r, tokens, out.logits)
            answers.append(answer)
            if answer is None:
                failed.append(r)
        if failed:
            rescored = self.score([prompts[r] for r in failed])
            for r, (folder, priority, confidence) in zip(failed, rescored, strict=True):
                answers[r] = (folder, priority, dict(confidence), "generate_fallback")
        return [a for a in answers if a is not None]

    def _parse_generated(self, row: int, tokens: list[int], logits: Sequence[torch.Tensor]
                         ) -> tuple[str, int, dict[str, float | None], str] | None:
        if self.eos_id in tokens:
            tokens = tokens[: tokens.index(self.eos_id) + 1]
        try:
            folder, priority = parse_answer(self.tokenizer.decode(tokens, skip_special_tokens=True))
        except AnswerParseError:
            return None
        walked = walk(self.trie, tokens, lambda step, choices: logits[step][row, choices].float().tolist(),
                      self._active.temperatures)
        if walked is None:  # parsed, but not the canonical token path: no per-branch probabilities
            return folder, priority, {"folder": None, "priority": None}, "generate"
        return folder, priority, dict(walked[1]), "generate"


def _constrained(walked: list[tuple[str, int, dict[str, float]]]) -> list[Answer]:
    """Walked answers as the classifier's answers (decoding: constrained)."""
    return [(folder, priority, dict(confidence), "constrained") for folder, priority, confidence in walked]


@contextmanager
def _model_errors() -> Iterator[None]:
    """Anything the model raises, as an InferenceError (the caller may split the batch and retry)."""
    try:
        yield
    except InferenceError:
        raise
    except Exception as exc:
        raise InferenceError(f"{type(exc).__name__}: {exc}") from exc


def _reader(row: list[list[float]], slot_of: dict[int, int], column: dict[int, int]
            ) -> Callable[[int, list[int]], list[float]]:
    """Logits of `choices` read at plan index `read`, from one row of the gathered logits."""

    def logits_at(read: int, choices: list[int]) -> list[float]:
        return [row[slot_of[read]][column[c]] for c in choices]

    return logits_at


def _cache_kwarg(model: Any) -> str:
    """transformers 5.2x renamed forward's `past_key_values` to `cache`; speak whichever this one knows."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
