"""The classification contract: labels, prompt, input decoding, answer format and output schema.

This is the one home of everything that training, evaluation and serving must agree on. The trainer
imports it; nothing else defines a label, a prompt or an answer string.

Exceptions:
    ContractError                 base class
    ├── InvalidNotification       raw input rejected (carries a machine-readable ``reason``)
    └── AnswerParseError          a generated answer is not a valid JSON answer
"""

from __future__ import annotations

import hashlib
import json
import re
import weakref
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Minor: output fields added (compatible: the prompt and answers are unchanged, adapters of 1.x load).
# Major: the prompt, the labels or the answer format changed (adapters must be retrained).
CONTRACT_VERSION = "1.1"

FOLDERS: tuple[str, ...] = ("Work", "Personal", "Promotions", "Alerts")
PRIORITIES: tuple[int, ...] = (1, 2, 3)
PRIORITY_LABELS: dict[int, str] = {1: "Low", 2: "Medium", 3: "High"}

SYSTEM_PROMPT = """You are a notification classifier. Classify the notification into exactly one folder and one priority.

Folders:
- Work: job-related messages: colleagues, meetings, calendars, code reviews, CI and deployments, tickets, deadlines, work chat.
- Personal: friends and family, personal conversations, social plans, personal appointments and reminders.
- Promotions: marketing, sales, discounts, coupons, newsletters, offers and product announcements.
- Alerts: automated notices: security, accounts and sign-ins, banking and payments, deliveries, devices and system status.

Priority:
1 = Low: can ignore or check later
2 = Medium: worth checking today
3 = High: requires immediate attention

Respond with ONLY a JSON object: {"folder": "<folder>", "priority": <1-3>}"""

# Qwen3 thinking is switched off through the chat template's own switch (enable_thinking=False), which
# renders an empty <think></think> block after the assistant header. Training renders the answer turn
# through the same template, so the three paths share one prompt byte for byte (tests/unit prove it).
CHAT_TEMPLATE_KWARGS: dict[str, Any] = {"enable_thinking": False}

TRUNCATION_MARK = " …"

# The most UTF-8 bytes one Qwen3 token stands for (a run of 128 spaces; tests/integration/test_prompt_parity.py reads
# the vocabulary). A message within the token budget so has at most budget x this many bytes, so a field
# longer than that many characters needs cutting anyway: render_user_message cuts it there before
# tokenizing, which bounds the tokenizer's work on the event loop whatever the message size.
MAX_TOKEN_BYTES = 128

RejectReason = Literal[
    "too_large",
    "too_deep",
    "invalid_utf8",
    "empty",
    "invalid_json",
    "not_an_object",
    "wrong_type",
    "missing_text",
    "undecodable",
    "unsupported_schema",  # a schema-registry frame around Avro or Protobuf (worker/envelopes/framing.py)
    "binary_payload",  # bytes that start with a control byte: not text, not framed
]
REJECT_REASONS: tuple[str, ...] = RejectReason.__args__  # type: ignore[attr-defined]


class ContractError(Exception):
    """Base class of the contract's errors."""


class InvalidNotification(ContractError):
    """Raw input that is not a notification; ``reason`` is short and machine-readable."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: RejectReason = reason
        self.message = message


class AnswerParseError(ContractError):
    """A generated answer that is not exactly one valid folder/priority JSON object."""


class Tokenizer(Protocol):
    """The slice of a Hugging Face tokenizer the contract needs."""

    def encode(self, text: str, add_special_tokens: bool = ..., **kwargs: Any) -> list[int]: ...

    def decode(self, ids: list[int], skip_special_tokens: bool = ...) -> str: ...

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    @property
    def backend_tokenizer(self) -> Any: ...


class Notification(BaseModel):
    """One validated notification. Unknown fields are ignored; every known field is a string."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    id: str | None = None
    app: str | None = None
    title: str | None = None
    body: str | None = None
    sender: str | None = None
    timestamp: str | None = None


class Confidence(BaseModel):
    """Probability of the chosen folder and of the chosen priority, renormalised over valid answers."""

    folder: float | None = Field(description="P(chosen folder); null only for a non-canonical generated answer")
    priority: float | None = Field(description="P(chosen priority | folder); null as above")


class ClassificationResult(BaseModel):
    """What the worker publishes for each notification (one JSON object)."""

    id: str | None
    folder: str
    priority: int
    priority_label: str
    confidence: Confidence
    decoding: Literal["constrained", "generate", "generate_fallback"]
    truncated: bool
    model: str
    adapter_id: str | None = None  # the adapter's directory name @ a short hash of its weights; None: bare base
    review: bool = False  # a confidence below NOTIF_REVIEW_BELOW: also sent to the review topic
    contract_version: str = CONTRACT_VERSION

    def to_json_bytes(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self)  # = model_dump_json(), without its 2 us of Python


# --- decode: raw bytes -> Notification --------------------------------------------------------------

# A notification is flat; this much nesting in an ignored field is generous, and far below the depth at
# which json.loads runs out of Python stack (RecursionError) or pydantic's parser gives up.
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


def decode_notification(raw: bytes | None, *, max_bytes: int = 65536) -> Notification:
    """Turn raw message bytes into a Notification or raise InvalidNotification, and nothing else.

    A JSON object is read field by field; any other text that is not JSON is the notification's body.
    Text that is valid JSON but not an object (arrays, numbers, strings, true/false/null) is rejected,
    so a producer's serialisation bug is never mistaken for a message. JSON nested deeper than
    MAX_JSON_DEPTH is rejected (``too_deep``) before any parser sees it; an error no rule foresaw is
    still an InvalidNotification (``undecodable``), never an exception that could stop the consumer.
    """
    if raw is None or len(raw) == 0:
        raise InvalidNotification("empty", "the message value is empty")
    if len(raw) > max_bytes:
        raise InvalidNotification("too_large", f"the message is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        return _decode(raw)
    except InvalidNotification:
        raise
    except Exception as exc:  # RecursionError, MemoryError of a parser, anything: the record is the problem
        raise InvalidNotification("undecodable", f"{type(exc).__name__}: {exc}"[:300]) from exc


def too_deep(raw: bytes) -> bool:
    """Whether JSON text nests arrays and objects deeper than MAX_JSON_DEPTH (brackets in strings do not count)."""
    depth = 0
    for match in _BRACKETS.finditer(_JSON_STRING.sub(b"", raw)):  # lazily: stops at the first level too deep
        depth += 1 if match[0] in (b"[", b"{") else -1
        if depth > MAX_JSON_DEPTH:
            return True
    return False


def _decode(raw: bytes) -> Notification:
    # the count first: the usual case, at the speed of a byte count
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and raw.lstrip()[:1] in (b"{", b"[") and too_deep(raw):
        raise InvalidNotification("too_deep", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:  # the common case, a well-formed JSON object, in one pass of pydantic's parser (2x cheaper)
        notification = Notification.model_validate_json(raw)
    except ValidationError:
        pass  # anything else takes the careful path below, which says exactly what is wrong
    else:
        return _with_text(notification, escaped=b"\\u" in raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidNotification("invalid_utf8", f"not valid UTF-8 at byte {exc.start}") from exc
    stripped = text.strip()
    if not stripped:
        raise InvalidNotification("empty", "the message holds only whitespace")
    if stripped[0] in "{[":
        return _decode_json(stripped)
    try:
        value = json.loads(stripped)
    except ValueError:
        return Notification(body=stripped)
    raise InvalidNotification(
        "not_an_object", f"JSON {type(value).__name__} is not a notification; send an object or plain text"
    )


def _decode_json(text: str) -> Notification:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidNotification("invalid_json", f"invalid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidNotification("not_an_object", f"JSON {type(value).__name__} is not a notification object")
    return notification_from_fields(value)


def notification_from_fields(fields: dict[str, Any]) -> Notification:
    """Validate a mapping of notification fields (also used by the trainer for flat JSONL)."""
    try:
        notification = Notification.model_validate(fields)
    except ValidationError as exc:
        bad = ", ".join(str(err["loc"][0]) for err in exc.errors() if err["loc"])
        raise InvalidNotification("wrong_type", f"fields must be strings or null: {bad}") from exc
    return _with_text(notification)


def _with_text(notification: Notification, *, escaped: bool = True) -> Notification:
    """The notification if it has text; ``escaped`` False: the JSON held no \\u escape (so no surrogate)."""
    if not (notification.title or "").strip() and not (notification.body or "").strip():
        raise InvalidNotification("missing_text", "a notification needs a non-empty title or body")
    n = notification
    text = f"{n.id}{n.app}{n.title}{n.body}{n.sender}{n.timestamp}" if escaped else ""
    if not text.isascii():
        try:  # a JSON escape like \\ud800 decodes to a lone surrogate, which no UTF-8 output can hold
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidNotification("invalid_utf8", "a field holds a lone surrogate escape") from exc
    return notification


# --- render: Notification -> prompt -----------------------------------------------------------------


def render_user_message(
    notification: Notification, tokenizer: Tokenizer | None = None, max_tokens: int | None = None
) -> tuple[str, bool]:
    """The user turn: one `Label: value` line per present field, in a fixed order.

    With a tokenizer and a budget, the message is cut to ``max_tokens`` tokens, taking from the body
    first (then title, sender, app) and marking each cut field with " …". Returns the text and
    whether anything was cut. id and timestamp are left out: they do not change what a notification
    is about, and leaving them out keeps equal messages equal.
    """
    fields = {
        "App": _clean(notification.app),
        "From": _clean(notification.sender),
        "Title": _clean(notification.title),
        "Body": _clean(notification.body),
    }
    text = _join(fields)
    # Byte-level BPE (Qwen's) never makes more tokens than UTF-8 bytes: short texts need no counting.
    if tokenizer is None or max_tokens is None or len(text.encode("utf-8")) <= max_tokens:
        return text, False
    bound = max_tokens * MAX_TOKEN_BYTES  # characters; more means more bytes, so more tokens than the budget
    truncated = any(len(value) > bound for value in fields.values())
    fields = {label: value[:bound] for label, value in fields.items()}
    for label in ("Body", "Title", "From", "App"):
        excess = _count(tokenizer, _join(fields)) - max_tokens
        if excess <= 0:
            break
        fields[label], cut = _shorten(tokenizer, fields[label], excess)
        truncated = truncated or cut
    return _join(fields), truncated


def _clean(value: str | None) -> str:
    return (value or "").strip()


def _join(fields: dict[str, str]) -> str:
    return "\n".join(f"{label}: {value}" for label, value in fields.items() if value)


def _count(tokenizer: Tokenizer, text: str) -> int:
    return len(encode_text(tokenizer, text)) if text else 0


def _shorten(tokenizer: Tokenizer, text: str, excess: int) -> tuple[str, bool]:
    """Drop about ``excess`` tokens (plus room for the mark) from the end of one field."""
    if not text:
        return text, False
    ids = encode_text(tokenizer, text)
    keep = len(ids) - excess - 2  # 2: the mark, and one token of slack for merges at the cut
    if keep <= 0:
        return "", True
    return tokenizer.decode(ids[:keep], skip_special_tokens=True).rstrip() + TRUNCATION_MARK, True


def chat_messages(user_message: str, answer: str | None = None) -> list[dict[str, str]]:
    """The conversation in the chat format of the reference's training files."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user_message}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def render_prompt(tokenizer: Tokenizer, user_message: str) -> str:
    """The full prompt text up to where the answer starts (serving and evaluation)."""
    text = tokenizer.apply_chat_template(
        chat_messages(user_message), tokenize=False, add_generation_prompt=True, **CHAT_TEMPLATE_KWARGS
    )
    return str(text)


USER_TURN = "<|im_start|>user\n"
_USER_SLOT = "\x00notif-user-message\x00"


def prompt_frame(tokenizer: Tokenizer) -> tuple[str, str, str]:
    """(prefix, before, after): every prompt is `prefix + before + user_message + after`.

    The prefix (the system turn, up to the user turn's <|im_start|>) is the same for every notification
    and ends right after a special token, so tokenizing it apart from the rest gives exactly the tokens of
    the whole prompt: the classifier caches its keys and values, the trainer runs it once per batch. The
    chat template inserts the user text verbatim, so the rest is filled by concatenation, no jinja render.
    """
    probe = render_prompt(tokenizer, _USER_SLOT)
    cut = probe.index(USER_TURN) + len("<|im_start|>")
    before, after = probe[cut:].split(_USER_SLOT)
    return probe[:cut], before, after


def encode_text(tokenizer: Tokenizer, text: str) -> list[int]:
    """Tokens of text a sender wrote: no special or added token, so a typed `<|im_end|>` stays characters.

    Every notification field goes through here (counting, truncation, prompts), in serving, evaluation
    and training alike: sender text can never open, close or fake a turn of the chat template. Hugging
    Face's `split_special_tokens=True` is not enough: it splits only tokens marked special, so `<think>`,
    `</think>` and `<tool_call>` would still become control ids; and it flips a flag on the shared Rust
    tokenizer, which the event loop and the inference thread use at the same time. The same BPE with no
    added tokens at all has neither problem.
    """
    plain = _PLAIN_BPE.get(tokenizer)
    if plain is None:
        plain = _PLAIN_BPE[tokenizer] = _without_added_tokens(tokenizer)
    return list(plain.encode(text, add_special_tokens=False).ids)


_PLAIN_BPE: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()  # a cache: one per tokenizer


def _without_added_tokens(tokenizer: Tokenizer) -> Any:
    """The tokenizer's own normalizer, pre-tokenizer and BPE, with its added (special and control) tokens removed."""
    from tokenizers import Tokenizer as RustTokenizer  # transformers' own dependency; not needed to decode input

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec["added_tokens"] = []
    return RustTokenizer.from_str(json.dumps(spec))


@dataclass(frozen=True)
class PromptTokens:
    """The one way a prompt is tokenized: the frame's own tokens around the user message's plain ones.

    ``prefix`` (the system turn) is shared by every prompt; ``suffix(user_message)`` is the rest, up to
    where the answer starts. For a message without special-token text, prefix + suffix equals the
    tokens of render_prompt's text: the frame's pieces end or start at special tokens or at a newline,
    where the tokenizer splits anyway (tests/integration/test_prompt_parity.py proves it).
    """

    prefix_text: str
    prefix: tuple[int, ...]
    before: tuple[int, ...]
    after: tuple[int, ...]
    tokenizer: Tokenizer

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> PromptTokens:
        prefix, before, after = prompt_frame(tokenizer)
        encode_text(tokenizer, before)  # builds the plain BPE now (seconds), not on the event loop's first count
        ids = [tuple(tokenizer.encode(part, add_special_tokens=False)) for part in (prefix, before, after)]
        return cls(prefix_text=prefix, prefix=ids[0], before=ids[1], after=ids[2], tokenizer=tokenizer)

    def suffix(self, user_message: str) -> tuple[int, ...]:
        return (*self.before, *encode_text(self.tokenizer, user_message), *self.after)


def render_training_text(tokenizer: Tokenizer, user_message: str, answer: str) -> tuple[str, str]:
    """(prompt, completion) for training: prompt is exactly render_prompt's, completion the answer turn."""
    full = str(tokenizer.apply_chat_template(
        chat_messages(user_message, answer), tokenize=False, **CHAT_TEMPLATE_KWARGS
    ))
    prompt = render_prompt(tokenizer, user_message)
    if not full.startswith(prompt):
        raise ContractError("the chat template renders the training prompt differently from serving")
    return prompt, full[len(prompt):]


# --- answers ----------------------------------------------------------------------------------------


def format_answer(folder: str, priority: int) -> str:
    """The exact answer string the model is trained to produce."""
    return json.dumps({"folder": folder, "priority": priority})


def valid_answers() -> list[tuple[str, int, str]]:
    """All 12 (folder, priority, answer string) combinations, folders first."""
    return [(f, p, format_answer(f, p)) for f in FOLDERS for p in PRIORITIES]


def parse_answer(text: str) -> tuple[str, int]:
    """Strictly parse a generated answer: one JSON object with exactly a valid folder and priority."""
    try:
        value = json.loads(text.strip())
    except ValueError as exc:
        raise AnswerParseError(f"not JSON: {text[:80]!r}") from exc
    if not isinstance(value, dict) or set(value) != {"folder", "priority"}:
        raise AnswerParseError(f"expected keys folder and priority: {text[:80]!r}")
    folder, priority = value["folder"], value["priority"]
    if folder not in FOLDERS:
        raise AnswerParseError(f"unknown folder {folder!r}")
    if type(priority) is not int or priority not in PRIORITIES:  # not True, not 3.0: the integer we trained
        raise AnswerParseError(f"priority must be 1, 2 or 3, got {priority!r}")
    return folder, int(priority)


def compatible_contract(version: object) -> bool:
    """Whether an adapter recorded under ``version`` speaks this contract (the same major version)."""
    return isinstance(version, str) and version.split(".")[0] == CONTRACT_VERSION.split(".")[0]


def contract_fingerprint() -> dict[str, str]:
    """What an adapter records about the contract it was trained on."""
    digest = hashlib.sha256(SYSTEM_PROMPT.encode("utf-8")).hexdigest()[:16]
    return {"contract_version": CONTRACT_VERSION, "system_prompt_sha256": digest}
