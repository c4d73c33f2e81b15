"""Which teacher layer is distilled into which student layer.

A layer map is a list of ``(teacher_index, student_index)`` pairs of *hidden-state* indices, as
in Hugging Face's ``outputs.hidden_states``: index 0 is the embedding output and index k the
output of layer k, so a model with N layers has valid indices 0..N. Both index sequences are
strictly increasing (a layer is used at most once, and depth order is kept, which the
layer-transforming relations of CKD rely on).

Named rules, for a teacher with Lt layers and a student with Ls layers:

* ``"uniform"`` - the rule of the official CKD code: the embedding output, plus every
  (Lt/g)-th teacher layer against every (Ls/g)-th student layer, g = gcd(Lt, Ls).
  12 -> 6 layers: (0,0), (2,1), (4,2), (6,3), (8,4), (10,5), (12,6); 12 -> 8: (0,0), (3,2),
  (6,4), (9,6), (12,8). Always valid and always ends with last-vs-last.
* ``"last"`` - only the last layers: [(Lt, Ls)].
* ``"skip"`` - PKD-style ("PKD-skip", Sun et al. 2019): student layer j <-> teacher layer
  j * Lt / Ls for j = 1..Ls, no embedding pair. Only defined when Ls divides Lt (otherwise a
  ValueError; use "uniform" or an explicit list). Unlike PKD, which leaves the last layer to
  its output-level loss, the last pair (Lt, Ls) is included.

Explicit maps: a sequence of pairs ``[(0, 0), (2, 1), (4, 2)]`` or the same as a string
``"0-0,2-1,4-2"`` (teacher-student, comma separated, spaces allowed).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

from torch import Tensor

LayerMapSpec = Union[str, Sequence[Sequence[int]]]
NAMED_LAYER_MAPS = ("uniform", "last", "skip")


def resolve_layer_map(spec: LayerMapSpec, n_teacher_layers: int, n_student_layers: int) -> list[tuple[int, int]]:
    """The ``(teacher hidden-state index, student hidden-state index)`` pairs that ``spec`` means.

    Args:
        spec: "uniform", "last", "skip", a string like "0-0,2-1,4-2", or a sequence of pairs.
        n_teacher_layers: number of teacher transformer layers Lt (hidden states are 0..Lt).
        n_student_layers: number of student transformer layers Ls (hidden states are 0..Ls).

    Raises:
        ValueError: unknown name, unparsable string, empty map, index out of range, or indices
            that are not strictly increasing; the message names the map and the valid ranges.
    """
    for name, value in (("n_teacher_layers", n_teacher_layers), ("n_student_layers", n_student_layers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int (the number of transformer layers), got {value!r}")
    lt, ls = n_teacher_layers, n_student_layers

    if isinstance(spec, str) and spec.strip() in NAMED_LAYER_MAPS:
        name = spec.strip()
        if name == "uniform":
            g = math.gcd(lt, ls)
            return [(0, 0)] + [(k * (lt // g), k * (ls // g)) for k in range(1, g + 1)]
        if name == "last":
            return [(lt, ls)]
        if lt % ls != 0:
            raise ValueError(
                f"layer map 'skip' needs the student's layer count to divide the teacher's "
                f"(teacher {lt}, student {ls}); use 'uniform' or an explicit list of pairs"
            )
        return [(j * (lt // ls), j) for j in range(1, ls + 1)]

    pairs = _parse(spec, lt, ls)
    _validate(pairs, spec, lt, ls)
    return pairs


def select_mapped_states(
    teacher_hidden_states: Sequence[Tensor],
    student_hidden_states: Sequence[Tensor],
    spec: LayerMapSpec,
) -> tuple[list[Tensor], list[Tensor], list[tuple[int, int]]]:
    """Resolve ``spec`` against two ``hidden_states`` tuples (embedding output + every layer).

    Returns ``(teacher_states, student_states, pairs)`` with the k-th teacher tensor paired with
    the k-th student tensor.
    """
    pairs = resolve_layer_map(spec, len(teacher_hidden_states) - 1, len(student_hidden_states) - 1)
    teacher = [teacher_hidden_states[t] for t, _ in pairs]
    student = [student_hidden_states[s] for _, s in pairs]
    return teacher, student, pairs


def _help(lt: int, ls: int) -> str:
    return (
        f"teacher indices must be in 0..{lt} and student indices in 0..{ls} (0 = embedding output), "
        f"or use one of {', '.join(map(repr, NAMED_LAYER_MAPS))}"
    )


def _parse(spec: object, lt: int, ls: int) -> list[tuple[int, int]]:
    if isinstance(spec, str):
        pairs = []
        for item in spec.split(","):
            parts = [p.strip() for p in item.split("-")]
            if len(parts) != 2 or not all(p.isdigit() for p in parts):
                raise ValueError(
                    f"layer map {spec!r}: cannot read {item.strip()!r}; write 'teacher-student' pairs "
                    f"separated by commas, e.g. '0-0,2-1,4-2'; {_help(lt, ls)}"
                )
            pairs.append((int(parts[0]), int(parts[1])))
        return pairs
    if not isinstance(spec, Sequence):
        raise ValueError(
            f"layer map {spec!r} is neither a name, a 'teacher-student' string nor a list of pairs; {_help(lt, ls)}"
        )
    pairs = []
    for item in spec:
        if (
            isinstance(item, str)
            or not isinstance(item, Sequence)
            or len(item) != 2
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in item)
        ):
            raise ValueError(f"layer map {spec!r}: {item!r} is not a (teacher, student) pair of ints; {_help(lt, ls)}")
        pairs.append((item[0], item[1]))
    return pairs


def _validate(pairs: list[tuple[int, int]], spec: object, lt: int, ls: int) -> None:
    if not pairs:
        raise ValueError(f"layer map {spec!r} is empty; {_help(lt, ls)}")
    for t, s in pairs:
        if not 0 <= t <= lt or not 0 <= s <= ls:
            raise ValueError(f"layer map {spec!r}: pair ({t}, {s}) is out of range; {_help(lt, ls)}")
    for (t0, s0), (t1, s1) in zip(pairs, pairs[1:]):
        if t1 <= t0 or s1 <= s0:
            raise ValueError(
                f"layer map {spec!r}: pairs ({t0}, {s0}) then ({t1}, {s1}) are not strictly increasing; "
                f"each teacher and student layer may be used once, in depth order"
            )
