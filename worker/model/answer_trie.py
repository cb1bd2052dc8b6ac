"""The token trie of the 12 valid answers, and greedy choice restricted to it (pure, no tensors).

Greedy decoding restricted to the valid answers only ever has a choice where the trie branches; along
every other stretch the next token is forced. Walking the trie therefore needs one model call per
branch (two: folder, then priority) instead of one per token, and gives the same answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from worker.contract import valid_answers

Decision = str  # "folder" or "priority"


@dataclass
class TrieNode:
    children: dict[int, TrieNode] = field(default_factory=dict)
    answers: set[tuple[str, int]] = field(default_factory=set)  # answers reachable from here
    leaf: tuple[str, int] | None = None  # set on the node after the end-of-turn token

    @property
    def choices(self) -> list[int]:
        """Child tokens in ascending id order (argmax ties go to the lowest id, as in generate)."""
        return sorted(self.children)

    @property
    def decision(self) -> Decision:
        """What a branch here decides: the folder while folders still differ, else the priority."""
        return "folder" if len({folder for folder, _ in self.answers}) > 1 else "priority"


class AnswerTrie:
    """Token sequences of every `format_answer(folder, priority)` + end-of-turn, as a trie."""

    def __init__(self, encode: Callable[[str], list[int]], eos_id: int) -> None:
        self.root = TrieNode()
        self.sequences: dict[tuple[str, int], list[int]] = {}
        for folder, priority, text in valid_answers():
            ids = [*encode(text), eos_id]
            self.sequences[(folder, priority)] = ids
            node = self.root
            node.answers.add((folder, priority))
            for token in ids:
                node = node.children.setdefault(token, TrieNode())
                node.answers.add((folder, priority))
            node.leaf = (folder, priority)

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Tokens that may follow `prefix` (for generate's prefix_allowed_tokens_fn); [] past a leaf."""
        node = self.root
        for token in prefix:
            if token not in node.children:
                return []
            node = node.children[token]
        return node.choices


def forced_chain(node: TrieNode) -> tuple[list[int], TrieNode]:
    """Follow single-child nodes from `node`: the forced tokens and the node where a choice (or the end) is."""
    tokens: list[int] = []
    while node.leaf is None and len(node.children) == 1:
        token = next(iter(node.children))
        tokens.append(token)
        node = node.children[token]
    return tokens, node


def restricted_softmax(logits: Sequence[float]) -> list[float]:
    """Softmax over the allowed tokens' logits only: the probability of each valid continuation."""
    top = max(logits)
    weights = [math.exp(value - top) for value in logits]
    total = sum(weights)
    return [weight / total for weight in weights]


def choose(node: TrieNode, logits: Sequence[float], temperature: float = 1.0) -> tuple[int, float]:
    """Greedy choice at a branch: (token, its restricted probability). `logits` align with node.choices.

    A calibration temperature divides the logits before the softmax; the choice is the same at any.
    """
    probs = restricted_softmax(logits if temperature == 1.0 else [value / temperature for value in logits])
    best = max(range(len(probs)), key=lambda i: (logits[i], -i))  # first maximum = lowest token id
    return node.choices[best], probs[best]


def walk(trie: AnswerTrie, tokens: Sequence[int], step_logits: Callable[[int, list[int]], list[float]],
         temperatures: Mapping[Decision, float] | None = None) -> tuple[tuple[str, int], dict[Decision, float]] | None:
    """Follow a generated token sequence through the trie, scoring each branch taken.

    `step_logits(i, choices)` gives the logits of `choices` at generation step i. Returns the answer and
    per-decision probabilities, or None when the sequence leaves the trie (a non-canonical answer).
    """
    node = trie.root
    confidence: dict[Decision, float] = {"folder": 1.0, "priority": 1.0}
    for step, token in enumerate(tokens):
        if node.leaf is not None or token not in node.children:
            return None
        if len(node.children) > 1:
            choices = node.choices
            logits = step_logits(step, choices)
            temperature = (temperatures or {}).get(node.decision, 1.0)
            probs = restricted_softmax([value / temperature for value in logits])
            confidence[node.decision] *= probs[choices.index(token)]
        node = node.children[token]
        if node.leaf is not None:
            return node.leaf, confidence
    return None


@dataclass
class FeedPlan:
    """Every trie token that precedes a choice, laid out to be fed to the model in ONE pass.

    The trunk (the forced opening, e.g. `{"folder": "`) ends where the folder is chosen. Each branch below
    it (e.g. `Prom`, `otions`, `", "priority": `) is fed side by side: a token attends to the prompt, the
    trunk and its own ancestors only (tree attention), with position ids as if it were the only branch.
    One forward pass then yields the logits at every choice point: the answer of greedy decoding
    restricted to the trie, without a second pass. Tokens after the last choice are never fed.
    """

    trunk: list[int]  # forced tokens from the root to the first choice
    first: TrieNode  # the first choice
    tokens: list[int] = field(default_factory=list)  # branch tokens, parents before children
    parents: list[int] = field(default_factory=list)  # index of the parent token; -1 = the trunk's end
    depths: list[int] = field(default_factory=list)  # 0 for a token right after the trunk
    read_at: dict[int, int] = field(default_factory=dict)  # id(choice node) -> token index (-1 = trunk end)
    choice_nodes: list[TrieNode] = field(default_factory=list)

    @classmethod
    def of(cls, trie: AnswerTrie) -> FeedPlan:
        trunk, first = forced_chain(trie.root)
        plan = cls(trunk, first)
        plan._add_choice(first, -1)
        return plan

    def _add_choice(self, node: TrieNode, read_index: int) -> None:
        self.read_at[id(node)] = read_index
        self.choice_nodes.append(node)
        for token in node.choices:
            self._add_edge(token, node.children[token], parent=read_index)

    def _add_edge(self, token: int, node: TrieNode, parent: int) -> None:
        """Feed `token` only when a choice lies below it (else it would only ever be forced)."""
        chain, below = forced_chain(node)
        if below.leaf is not None:
            return
        index = parent
        for fed in [token, *chain]:
            self.tokens.append(fed)
            self.parents.append(index)
            self.depths.append(0 if index < 0 else self.depths[index] + 1)
            index = len(self.tokens) - 1
        self._add_choice(below, index)

    def ancestors(self) -> list[list[bool]]:
        """[T, T]: may token i attend to token j (j is i or an ancestor of i)?"""
        size = len(self.tokens)
        allowed = [[False] * size for _ in range(size)]
        for i in range(size):
            j = i
            while j >= 0:
                allowed[i][j] = True
                j = self.parents[j]
        return allowed

    def read_slots(self) -> list[int]:
        """The token indices whose logits are needed, in a fixed order (-1 = the trunk's end)."""
        return sorted(set(self.read_at.values()))


def walk_plan(plan: FeedPlan, logits_at: Callable[[int, list[int]], list[float]],
              temperatures: Mapping[Decision, float] | None = None
              ) -> tuple[tuple[str, int], dict[Decision, float]]:
    """Greedy restricted decoding over a fed plan: `logits_at(read_index, choices)` gives a choice's logits.

    ``temperatures`` (an adapter's calibration, per decision) scale the confidences, never the answer.
    """
    node = plan.first
    confidence: dict[Decision, float] = {"folder": 1.0, "priority": 1.0}
    scale = temperatures or {}
    while node.leaf is None:
        token, prob = choose(node, logits_at(plan.read_at[id(node)], node.choices), scale.get(node.decision, 1.0))
        confidence[node.decision] *= prob
        _, node = forced_chain(node.children[token])
    return node.leaf, confidence


Branch = tuple[Decision, list[float], int]  # (decision, the choices' logits, index of the one taken)


def greedy_branches(plan: FeedPlan, logits_at: Callable[[int, list[int]], list[float]]) -> list[Branch]:
    """The branches greedy restricted decoding takes, with their logits (what calibration fits)."""
    node = plan.first
    branches: list[Branch] = []
    while node.leaf is None:
        logits = logits_at(plan.read_at[id(node)], node.choices)
        token, _ = choose(node, logits)
        branches.append((node.decision, logits, node.choices.index(token)))
        _, node = forced_chain(node.children[token])
    return branches
