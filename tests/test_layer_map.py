"""Layer-map rules: the named maps, explicit maps, and every kind of invalid map."""
import math

import pytest
import torch

from ckdlab.objectives.layer_map import resolve_layer_map, select_mapped_states


def reference_uniform(lt: int, ls: int) -> list[tuple[int, int]]:
    """The official 'emb+skip' rule, written as in the CKD code: step_t = Lt/g, step_s = Ls/g."""
    g = math.gcd(lt, ls)
    step_t, step_s = lt // g, ls // g
    return [(0, 0)] + list(zip(range(step_t, lt + 1, step_t), range(step_s, ls + 1, step_s)))


@pytest.mark.parametrize("lt,ls", [(12, 6), (12, 4), (12, 8), (4, 2), (6, 4), (7, 3), (3, 3), (2, 5), (1, 1)])
def test_uniform_matches_official_rule(lt, ls):
    pairs = resolve_layer_map("uniform", lt, ls)
    assert pairs == reference_uniform(lt, ls)
    assert pairs[0] == (0, 0) and pairs[-1] == (lt, ls)


def test_uniform_known_values():
    assert resolve_layer_map("uniform", 12, 6) == [(0, 0), (2, 1), (4, 2), (6, 3), (8, 4), (10, 5), (12, 6)]
    assert resolve_layer_map("uniform", 12, 8) == [(0, 0), (3, 2), (6, 4), (9, 6), (12, 8)]
    assert resolve_layer_map("uniform", 7, 3) == [(0, 0), (7, 3)]


def test_last_and_skip():
    assert resolve_layer_map("last", 12, 6) == [(12, 6)]
    assert resolve_layer_map("skip", 12, 6) == [(2, 1), (4, 2), (6, 3), (8, 4), (10, 5), (12, 6)]
    assert resolve_layer_map("skip", 12, 4) == [(3, 1), (6, 2), (9, 3), (12, 4)]
    assert resolve_layer_map(" skip ", 4, 4) == [(1, 1), (2, 2), (3, 3), (4, 4)]


def test_skip_not_divisible_is_an_error():
    with pytest.raises(ValueError, match=r"'skip'.*teacher 12, student 8.*'uniform'"):
        resolve_layer_map("skip", 12, 8)


def test_explicit_list_and_string_agree():
    expected = [(0, 0), (2, 1), (4, 2), (6, 3)]
    assert resolve_layer_map("0-0,2-1,4-2,6-3", 6, 3) == expected
    assert resolve_layer_map(" 0-0 , 2 - 1,4-2, 6-3 ", 6, 3) == expected
    assert resolve_layer_map(expected, 6, 3) == expected
    assert resolve_layer_map([[0, 0], [2, 1]], 6, 3) == [(0, 0), (2, 1)]
    assert resolve_layer_map(((6, 3),), 6, 3) == [(6, 3)]


@pytest.mark.parametrize(
    "spec,pattern",
    [
        ("0-0,13-1", r"'0-0,13-1'.*\(13, 1\) is out of range.*0\.\.12.*0\.\.6"),
        ([(0, 7)], r"\(0, 7\) is out of range.*0\.\.12.*0\.\.6"),
        ([], r"is empty"),
        ("0-0,4-2,2-3", r"\(4, 2\) then \(2, 3\) are not strictly increasing"),
        ("0-0,2-1,2-2", r"\(2, 1\) then \(2, 2\) are not strictly increasing"),
        ([(2, 2), (4, 2)], r"not strictly increasing"),
        ("0-0,2", r"cannot read '2'.*'0-0,2-1,4-2'"),
        ("0-0,-1-2", r"cannot read"),
        ("a-b", r"cannot read 'a-b'"),
        ("uniformly", r"cannot read 'uniformly'.*'uniform', 'last', 'skip'"),
        ("", r"cannot read ''"),
        ([(0, 0, 0)], r"is not a \(teacher, student\) pair"),
        ([(0.0, 0)], r"is not a \(teacher, student\) pair"),
        (["0-0"], r"is not a \(teacher, student\) pair"),
        (5, r"neither a name"),
    ],
)
def test_invalid_maps_are_clear_errors(spec, pattern):
    with pytest.raises(ValueError, match=pattern):
        resolve_layer_map(spec, 12, 6)


@pytest.mark.parametrize("lt,ls", [(0, 6), (12, 0), (True, 2), (12.0, 6)])
def test_invalid_layer_counts(lt, ls):
    with pytest.raises(ValueError, match=r"n_(teacher|student)_layers must be a positive int"):
        resolve_layer_map("uniform", lt, ls)


def test_select_mapped_states_picks_hidden_state_indices():
    teacher = tuple(torch.full((1, 2, 3), float(k)) for k in range(5))  # embedding + 4 layers
    student = tuple(torch.full((1, 2, 2), float(10 + k)) for k in range(3))  # embedding + 2 layers
    t, s, pairs = select_mapped_states(teacher, student, "uniform")
    assert pairs == [(0, 0), (2, 1), (4, 2)]
    assert [x[0, 0, 0].item() for x in t] == [0.0, 2.0, 4.0]
    assert [x[0, 0, 0].item() for x in s] == [10.0, 11.0, 12.0]
