"""Isolating the inputs that fail a batch (fraud/scoring/isolation.py): pure logic, no model."""

import pytest

from fraud.scoring.isolation import Failure, ModelBrokenError, check_model, isolate


class Bad(Exception):
    pass


def _attempts(bad: set[int]):
    """An attempt that fails on any group holding one of `bad`, and the groups it saw."""
    seen: list[list[int]] = []

    def attempt(group):
        seen.append(list(group))
        if bad & set(group):
            raise Bad(f"{sorted(bad & set(group))}")
        return [i * 10 for i in group]

    return attempt, seen


def test_each_input_that_fails_alone_is_found_and_the_rest_get_their_results():
    attempt, seen = _attempts({3, 11})
    items = list(range(16))
    with pytest.raises(Bad) as first:
        attempt(items)  # the caller's fast path: the whole batch fails
    outcomes = isolate(items, attempt, first.value)
    assert [i for i, o in enumerate(outcomes) if isinstance(o, Failure)] == [3, 11]
    assert all(o == i * 10 for i, o in enumerate(outcomes) if i not in (3, 11))
    assert all(isinstance(o.error, Bad) for o in outcomes if isinstance(o, Failure))
    assert len(seen) - 1 <= 2 * 2 * 4  # about 2·log2(n) more calls per failing input


def test_inputs_are_worked_on_in_order_after_every_input_before_them():
    attempt, seen = _attempts({2, 5})
    items = list(range(8))
    outcomes = isolate(items, attempt, Bad())
    succeeded = [i for group in seen if not {2, 5} & set(group) for i in group]
    assert succeeded == [i for i in items if i not in (2, 5)]  # each once, in input order
    assert [type(o) for o in outcomes].count(Failure) == 2


def test_a_single_input_that_failed_is_its_failure_without_another_try():
    attempt, seen = _attempts({0})
    error = Bad("once")
    assert isolate([0], attempt, error) == [Failure(error)]
    assert seen == [] and isolate([], attempt, error) == []


def test_check_model_stops_only_when_the_known_good_probe_fails_too():
    check_model(lambda texts: [1] * len(texts), Bad(), "encoding a batch")  # a working model

    def broken(texts):
        raise RuntimeError("model file gone")

    with pytest.raises(ModelBrokenError) as e:
        check_model(broken, Bad(), "encoding a batch")
    line = str(e.value)
    assert "\n" not in line and "Bad" in line and "RuntimeError" in line
    assert "model file gone" not in line  # the exception's text is never repeated
