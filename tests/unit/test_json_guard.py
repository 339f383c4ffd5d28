"""Property tests of the JSON body guard and the JSON-safe error echo (`app/guard.py`, issue 13 class 1):
any JSON document is refused exactly when it holds a non-finite number, an integer outside 64 bits or
an over-long string, and whatever an error echoes serialises as strict JSON."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from carrygate.app.guard import INT64, MAX_JSON_STRING, _problem, json_safe

SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=20) | st.builds(lambda n: "x" * n, st.sampled_from([MAX_JSON_STRING, MAX_JSON_STRING + 1])))
DOCUMENTS = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                         max_leaves=20)


def hostile(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, int):
        return not -INT64 <= value < INT64
    if isinstance(value, str):
        return len(value) > MAX_JSON_STRING
    if isinstance(value, list):
        return any(hostile(v) for v in value)
    return any(hostile(k) or hostile(v) for k, v in value.items())


@settings(max_examples=300, deadline=None)
@given(DOCUMENTS)
def test_a_document_is_refused_exactly_when_it_holds_something_hostile(document: Any) -> None:
    body = json.dumps(document).encode()  # NaN / Infinity / -Infinity as Python writes them
    assert (_problem(body) is not None) == hostile(document)


@given(st.sampled_from(["1e400", "-1e400", "1E999", "NaN", "Infinity", "-Infinity", "1" * 5000]))
def test_overflowing_literals_are_refused(literal: str) -> None:
    problem = _problem(f'{{"a": [0, {literal}]}}'.encode())
    assert problem is not None and problem.kind in ("non_finite_number", "int_out_of_range")


@settings(max_examples=300, deadline=None)
@given(st.recursive(SCALARS | st.binary(max_size=8) | st.just(object()) | st.just(ValueError("bad")),
                    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20))
def test_whatever_an_error_echoes_serialises_as_strict_json(value: Any) -> None:
    text = json.dumps(json_safe(value), allow_nan=False)
    json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(AssertionError(c)))
