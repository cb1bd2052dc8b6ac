"""The answer trie and greedy choice over it (with a toy tokenizer: one token per character)."""

from __future__ import annotations

from worker.contract import format_answer
from worker.model.answer_trie import AnswerTrie, choose, forced_chain, restricted_softmax, walk

EOS = 0


def encode(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_trie_holds_the_twelve_answers() -> None:
    trie = AnswerTrie(encode, EOS)
    assert len(trie.sequences) == 12
    for (folder, priority), ids in trie.sequences.items():
        assert ids == [*encode(format_answer(folder, priority)), EOS]
        assert trie.allowed(ids) == []
    assert trie.allowed(encode("{")) == [ord('"')]
    assert trie.allowed(encode("nonsense")) == []


def test_forced_chain_stops_at_the_first_choice() -> None:
    trie = AnswerTrie(encode, EOS)
    chain, node = forced_chain(trie.root)
    assert "".join(map(chr, chain)) == '{"folder": "'
    assert node.decision == "folder"
    assert [chr(c) for c in node.choices] == ["A", "P", "W"]  # Alerts, Personal/Promotions, Work


def test_choose_takes_the_first_maximum_and_its_probability() -> None:
    trie = AnswerTrie(encode, EOS)
    _, node = forced_chain(trie.root)
    token, prob = choose(node, [1.0, 3.0, 3.0])
    assert chr(token) == "P" and abs(prob - restricted_softmax([1.0, 3.0, 3.0])[1]) < 1e-12


def test_walk_scores_each_decision() -> None:
    trie = AnswerTrie(encode, EOS)
    ids = trie.sequences[("Promotions", 2)]

    def logits(step: int, choices: list[int]) -> list[float]:
        return [2.0 if chr(c) in "Pr2" else 0.0 for c in choices]

    answer, confidence = walk(trie, ids, logits) or (None, None)
    assert answer == ("Promotions", 2)
    assert confidence is not None and 0 < confidence["folder"] < 1 and 0 < confidence["priority"] < 1
    assert walk(trie, encode('{"x'), logits) is None


def test_feed_plan_lays_out_every_choice_for_one_pass() -> None:
    from worker.model.answer_trie import FeedPlan, walk_plan

    trie = AnswerTrie(encode, EOS)
    plan = FeedPlan.of(trie)
    assert "".join(map(chr, plan.trunk)) == '{"folder": "'
    # The folder choice is read at the trunk's end; each folder's priority choice at its branch's end.
    assert plan.read_at[id(plan.first)] == -1
    assert len(plan.choice_nodes) >= 1 + 4
    ancestors = plan.ancestors()
    for i, parent in enumerate(plan.parents):
        assert ancestors[i][i]
        if parent >= 0:
            assert ancestors[i][parent] and plan.depths[i] == plan.depths[parent] + 1
    # No token after the last choice is fed: no digit, no closing brace, no end token.
    assert not {ord(c) for c in "123}"} & set(plan.tokens) and EOS not in plan.tokens

    def logits_at(read: int, choices: list[int]) -> list[float]:
        return [1.0 if chr(c) in "Wo3" else 0.0 for c in choices]

    answer, confidence = walk_plan(plan, logits_at)
    assert answer == ("Work", 3)
    assert 0.25 < confidence["folder"] < 1 and 1 / 3 < confidence["priority"] < 1


def test_a_temperature_scales_the_confidence_and_keeps_the_answer() -> None:
    from worker.model.answer_trie import FeedPlan, greedy_branches, walk_plan

    plan = FeedPlan.of(AnswerTrie(encode, EOS))

    def logits_at(read: int, choices: list[int]) -> list[float]:
        return [float((c * 7 + read) % 5) for c in choices]  # a fixed, uneven spread per choice point

    answer, plain = walk_plan(plan, logits_at)
    for folder_t, priority_t in ((2.0, 0.5), (0.25, 4.0)):
        scaled_answer, scaled = walk_plan(plan, logits_at, {"folder": folder_t, "priority": priority_t})
        assert scaled_answer == answer
        assert (scaled["folder"] < plain["folder"]) == (folder_t > 1)
        assert (scaled["priority"] < plain["priority"]) == (priority_t > 1)
    branches = greedy_branches(plan, logits_at)
    expected = {"folder": 1.0, "priority": 1.0}
    for decision, logits, taken in branches:
        expected[decision] *= restricted_softmax(logits)[taken]
    assert expected == plain
