"""Property-based tests (hypothesis) of the pure parts with large input spaces: answers, plans, packing, hashing."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from aiokafka.partitioner import DefaultPartitioner, murmur2
from hypothesis import example, given, settings
from hypothesis import strategies as st

from worker.contract import FOLDERS, PRIORITIES, AnswerParseError, format_answer, parse_answer, valid_answers
from worker.model.layout import WIDTH_MULTIPLE, build_pass, pack
from worker.model.planning import plan_batches
from worker.stream.kafka.partitioner import murmur2_same_length, partitions_for_keys

MODEST = settings(max_examples=150, deadline=None)  # the box is slow and shared

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False),
                         st.text(max_size=12))
folders = st.one_of(st.sampled_from(FOLDERS), st.sampled_from(["work", "Work ", "Spam", ""]), json_scalars)
priorities = st.one_of(st.sampled_from([1, 2, 3]), st.sampled_from([0, 4, 1.0, 3.0, 2.5, "2", True, False]),
                       json_scalars)
answer_like = st.one_of(
    st.fixed_dictionaries({"folder": folders, "priority": priorities}),  # the right keys, any values
    st.fixed_dictionaries({}, optional={"folder": folders, "priority": priorities, "confidence": json_scalars}),
)


# --- parse_answer: exactly the 12 answers ------------------------------------------------------------------


@MODEST
@given(answer_like, st.sampled_from(["", " ", "\n"]))
@example({"folder": "Work", "priority": 3.0}, "")  # a float is not the integer the answer format writes
@example({"folder": "Alerts", "priority": True}, "")
def test_parse_answer_accepts_exactly_a_valid_folder_and_an_integer_priority(value: dict[str, object],
                                                                              pad: str) -> None:
    text = pad + json.dumps(value) + pad
    valid = (set(value) == {"folder", "priority"} and value["folder"] in FOLDERS
             and type(value["priority"]) is int and value["priority"] in PRIORITIES)
    if valid:
        assert parse_answer(text) == (value["folder"], value["priority"])
    else:
        with pytest.raises(AnswerParseError):
            parse_answer(text)


@MODEST
@given(st.text(max_size=60))
def test_parse_answer_on_any_text_gives_one_of_the_12_or_a_parse_error(text: str) -> None:
    try:
        answer = parse_answer(text)
    except AnswerParseError:
        return
    assert answer in {(f, p) for f, p, _ in valid_answers()}


def test_every_formatted_answer_parses_back() -> None:
    assert [parse_answer(format_answer(f, p)) for f, p, _ in valid_answers()] == [
        (f, p) for f in FOLDERS for p in PRIORITIES]


# --- plan_batches ----------------------------------------------------------------------------------------


@MODEST
@given(st.lists(st.integers(1, 600), max_size=200), st.integers(1, 64), st.integers(1, 8192))
def test_plans_cover_every_index_once_within_budgets(lengths: list[int], max_size: int, max_tokens: int) -> None:
    batches = plan_batches(lengths, max_size=max_size, max_tokens=max_tokens)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        assert batch and len(batch) <= max_size
        padded = len(batch) * max(lengths[i] for i in batch)
        assert padded <= max_tokens or len(batch) == 1  # an overlong row alone, never dropped
    # length-sorted: every batch's rows are no longer than the next batch's
    for first, second in itertools.pairwise(batches):
        assert max(lengths[i] for i in first) <= min(lengths[i] for i in second)


# --- packing ---------------------------------------------------------------------------------------------


@MODEST
@given(st.lists(st.integers(1, 300), min_size=1, max_size=80))
def test_packing_places_every_segment_once_within_the_row_width(sizes: list[int]) -> None:
    packing = pack(sizes)
    assert sorted(i for row in packing.rows for i in row) == list(range(len(sizes)))
    assert packing.width % WIDTH_MULTIPLE == 0 and packing.width <= 2 * max(sizes) + WIDTH_MULTIPLE
    for row in packing.rows:
        assert sum(sizes[i] for i in row) <= packing.width
    one_per_row = len(sizes) * -(-max(sizes) // WIDTH_MULTIPLE) * WIDTH_MULTIPLE
    assert packing.cost <= one_per_row  # never worse than no packing


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 999), min_size=1, max_size=40), min_size=1, max_size=12),
       st.integers(0, 16))
def test_a_packed_segment_sees_the_prefix_and_itself_only(trunks: list[list[int]], prefix: int) -> None:
    branch = [7, 8, 9]  # a chain: each branch token sees its ancestors
    ancestors = torch.tensor([[j <= i for j in range(3)] for i in range(3)])
    fed = build_pass(trunks, branch, [0, 1, 2], ancestors, [-1, 2], prefix, pad_id=0)
    ids, positions, mask = fed.input_ids, fed.position_ids, fed.mask[:, 0]
    for s, trunk in enumerate(trunks):
        r, end = int(fed.read_rows[s * 2]), int(fed.read_cols[s * 2])  # the trunk's last token
        start = end - len(trunk) + 1
        assert ids[r, start:end + 1].tolist() == trunk  # the segment's tokens, contiguous
        assert positions[r, start:end + 1].tolist() == list(range(prefix, prefix + len(trunk)))  # as if alone
        seen = mask[r, end].nonzero().flatten().tolist()
        assert seen == [*range(prefix), *range(prefix + start, prefix + end + 1)]  # prefix + own trunk, causal
        last = int(fed.read_cols[s * 2 + 1])  # the last branch token: trunk + its whole chain
        assert ids[r, last] == 9 and positions[r, last] == prefix + len(trunk) + 2
        assert mask[r, last].nonzero().flatten().tolist() == [*range(prefix), *range(prefix + start, prefix + last + 1)]


# --- murmur2 ---------------------------------------------------------------------------------------------


@MODEST
@given(st.integers(0, 40).flatmap(lambda n: st.lists(st.binary(min_size=n, max_size=n), min_size=1, max_size=40)))
def test_bulk_murmur2_equals_aiokafkas(keys: list[bytes]) -> None:
    assert murmur2_same_length(keys) == [murmur2(key) for key in keys]


@MODEST
@given(st.lists(st.one_of(st.none(), st.binary(max_size=24)), min_size=1, max_size=60), st.integers(1, 12))
def test_partitions_are_those_of_aiokafkas_default_partitioner(keys: list[bytes | None], count: int) -> None:
    partitions = list(range(count))
    chosen = partitions_for_keys(keys, partitions)
    for key, partition in zip(keys, chosen, strict=True):
        assert partition in partitions
        if key is not None:
            assert partition == DefaultPartitioner()(key, partitions, partitions)
