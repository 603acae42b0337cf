"""ir/symbolic.py: canonical integer expressions over bounded dims, checked against plain
Python integer arithmetic at every choice of the symbols."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnx2wgsl.ir.symbolic import (
    Expr,
    Symbol,
    SymbolicError,
    as_expr,
    compare,
    floordiv,
    mod,
    parse_expr,
    simplify,
    smax,
    smin,
    substitute,
    tdiv,
)
from onnx2wgsl.runtime.manifest import evaluate

B, S = Symbol("batch", 1, 4), Symbol("seq", 1, 9)
SYMS = {"batch": B, "seq": S}
b, s = Expr.symbol(B), Expr.symbol(S)


def envs():
    for vb, vs in itertools.product(range(B.lo, B.hi + 1), range(S.lo, S.hi + 1)):
        yield {"batch": vb, "seq": vs}


def _trunc(x: int, y: int) -> int:
    q = abs(x) // abs(y)
    return q if (x < 0) == (y < 0) else -q


# An expression strategy: (canonical Expr, the same computation as a Python function).
leaves = st.one_of(
    st.integers(-6, 6).map(lambda n: (as_expr(n), lambda e, n=n: n)),
    st.sampled_from([(b, lambda e: e["batch"]), (s, lambda e: e["seq"])]),
)


def _combine(children):
    pair = st.tuples(children, children)

    def positive(d):  # a divisor: made positive over the ranges, as shape math's are
        return (as_expr(smax(d[0], 1)), lambda e, f=d[1]: max(f(e), 1))

    return st.one_of(
        pair.map(lambda p: (p[0][0] + p[1][0], lambda e, p=p: p[0][1](e) + p[1][1](e))),
        pair.map(lambda p: (p[0][0] - p[1][0], lambda e, p=p: p[0][1](e) - p[1][1](e))),
        pair.map(lambda p: (p[0][0] * p[1][0], lambda e, p=p: p[0][1](e) * p[1][1](e))),
        pair.map(lambda p: (as_expr(smax(p[0][0], p[1][0])), lambda e, p=p: max(p[0][1](e), p[1][1](e)))),
        pair.map(lambda p: (as_expr(smin(p[0][0], p[1][0])), lambda e, p=p: min(p[0][1](e), p[1][1](e)))),
        pair.map(lambda p: (p[0], positive(p[1]))).map(
            lambda p: (floordiv(p[0][0], p[1][0]), lambda e, p=p: p[0][1](e) // p[1][1](e))
        ),
        pair.map(lambda p: (p[0], positive(p[1]))).map(
            lambda p: (mod(p[0][0], p[1][0]), lambda e, p=p: p[0][1](e) % p[1][1](e))
        ),
        pair.map(lambda p: (p[0], positive(p[1]))).map(
            lambda p: (tdiv(p[0][0], p[1][0]), lambda e, p=p: _trunc(p[0][1](e), p[1][1](e)))
        ),
    )


exprs = st.recursive(leaves, _combine, max_leaves=6)


@settings(max_examples=300, deadline=None, derandomize=True)  # the same cases every run
@given(exprs)
def test_an_expression_evaluates_as_python_does_within_its_bounds(case):
    e, f = case
    lo, hi = e.bounds
    for env in envs():
        want = f(env)
        assert e.evaluate(env) == want, (str(e), env)
        assert evaluate(e.to_json(), env) == want  # as the runtimes evaluate it, (e.to_json(), env)
        assert lo <= want <= hi, (str(e), env, e.bounds)


@settings(max_examples=300, deadline=None, derandomize=True)  # the same cases every run
@given(exprs)
def test_the_text_form_parses_back_to_an_equal_expression(case):
    e, _ = case
    again = as_expr(parse_expr(str(e), SYMS))
    assert again == e and hash(again) == hash(e), str(e)


def test_canonical_forms_compare_and_hash_equal():
    assert b * s + s == s * (b + 1) == (1 + b) * s
    assert len({b * s, s * b, (b * s * 2) // 2}) == 1
    assert simplify(s - s) == 0 and simplify(as_expr(3) * 4) == 12
    assert floordiv(4 * s + 2, 2) == 2 * s + 1
    assert str(floordiv(s + 1, 2)) == "((seq + 1) // 2)"
    assert str(2 * b * s - 3) == "2*batch*seq - 3"
    assert mod(4 * s + 6, 2) == 0 and mod(4 * s + 7, 4) == 3


def test_ranges_decide_comparisons_and_extremes():
    assert compare(s, -1) == 1 and compare(s, 0) == 1 and compare(s, 5) is None
    assert compare(b * s, 36) == 0 or compare(b * s, 37) == -1
    assert smax(s, 1) == s and smin(s, 0) == 0 and smin(s, 9) == s
    assert floordiv(s, 10) == 0  # seq < 10 over its range
    assert (b * s * 32).bounds == (32, 4 * 9 * 32)
    assert tdiv(s - 5, 2).bounds == (-2, 2)


def test_bad_expressions_are_clear_errors():
    with pytest.raises(SymbolicError, match="may be zero or negative"):
        floordiv(s, s - 1)
    with pytest.raises(SymbolicError, match="names 'heads'"):
        parse_expr("heads * 2", SYMS)
    with pytest.raises(SymbolicError, match="only integers"):
        parse_expr("seq / 2", SYMS)
    with pytest.raises(SymbolicError, match="bad dim expression"):
        parse_expr("seq +", SYMS)
    with pytest.raises(ValueError, match="range 5..2"):
        Symbol("n", 5, 2)


def test_the_runtime_evaluates_max_and_min_of_a_zero():
    # found by the property test: max(0, batch - 2) at batch 1 once divided by the zero operand
    assert evaluate(as_expr(smax(b - 2, 0)).to_json(), {"batch": 1, "seq": 1}) == 0
    assert evaluate(["min", 0, ["+", -2, "batch"]], {"batch": 1}) == -1


def test_substitute_replaces_a_symbol_inside_every_kind_of_atom():
    T = Symbol("total", 2, 13)
    t = Expr.symbol(T)
    e = smin(floordiv(s * s + 3 * b, 2), mod(s + 1, 4) + b) + tdiv(s - 5, 3) + smax(s, b) * b
    got = substitute(e, {"seq": t - b})
    assert S not in got.symbols and T in got.symbols
    for bv in range(1, 5):
        for tv in range(bv + 1, 14):
            if 1 <= tv - bv <= 9:
                assert got.evaluate({"batch": bv, "total": tv}) == e.evaluate({"batch": bv, "seq": tv - bv})
    assert substitute(b + 1, {"seq": t}) == b + 1
