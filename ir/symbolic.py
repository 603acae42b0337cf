"""Integer expressions over dims bounded at compile time and chosen at run time.

A dim kept symbolic (``--dim seq=1..512``) is a :class:`Symbol` with its range; shape
arithmetic over such dims (an exporter's Shape -> Gather -> Mul -> Concat -> Reshape chains)
folds into an :class:`Expr`: a polynomial with integer coefficients whose atoms are symbols
and the few operations a polynomial cannot hold (floor and truncating division, modulo,
max, min), each kept in a canonical form, so equal expressions compare and hash equal.

Every expression knows its bounds over the symbols' ranges (interval arithmetic: sound, and
exact for the monotone shapes exporters make), which decides comparisons (``seq == -1`` is
false when seq >= 1) and sizes memory at the bound. ``evaluate`` gives the value at a run's
symbol values; ``to_json`` is the tree both runtimes evaluate, with no parser
(runtime/manifest.py ``evaluate``); ``str`` and
``parse_expr`` are the text form (Python syntax: ``2*batch*seq + 1``, ``(seq + 1) // 2``,
``max(seq, 4)``).
"""

from __future__ import annotations

import ast
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Union

Interval = tuple[int, int]
Dimish = Union[int, "Expr"]


@dataclass(frozen=True, order=True)
class Symbol:
    """A named dim with the closed range ``lo..hi`` its run-time values lie in."""

    name: str
    lo: int
    hi: int

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"dim name {self.name!r} is not an identifier")
        if not 0 <= self.lo <= self.hi:
            raise ValueError(f"dim {self.name} has range {self.lo}..{self.hi}; want 0 <= lo <= hi")


# Atoms a polynomial cannot hold: (kind, args). Kinds and their integer semantics.
_OPS = {
    "floordiv": lambda a, b: a // b,
    "tdiv": lambda a, b: abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1),  # ONNX integer Div
    "mod": lambda a, b: a % b,  # the sign of the divisor, as Python and ONNX Mod(fmod=0)
    "max": max,
    "min": min,
}
_JSON_OP = {"floordiv": "//", "tdiv": "tdiv", "mod": "%", "max": "max", "min": "min"}


@dataclass(frozen=True, order=True)
class _Node:
    kind: str
    args: tuple[Expr, ...]


Atom = Symbol | _Node
_CORNER_ATOMS = 8  # bounds by the corners of the atoms' box up to this many atoms (2^8 points)
Monomial = tuple[tuple[Atom, int], ...]  # sorted (atom, power) pairs; () is the constant term


def _atom_key(a: Atom) -> tuple:
    return (0, a.name) if isinstance(a, Symbol) else (1, a.kind, tuple(str(x) for x in a.args))


def _mono_key(m: Monomial) -> tuple:
    return (-sum(p for _, p in m), tuple((_atom_key(a), p) for a, p in m))


class Expr:
    """A canonical integer expression: a sum of coefficient * monomial terms."""

    __slots__ = ("terms", "__dict__")

    def __init__(self, terms: dict[Monomial, int]):
        items = [(m, c) for m, c in terms.items() if c]
        items.sort(key=lambda mc: _mono_key(mc[0]))
        self.terms: tuple[tuple[Monomial, int], ...] = tuple(items)

    # -- making ------------------------------------------------------------------------
    @staticmethod
    def const(n: int) -> Expr:
        return Expr({(): int(n)})

    @staticmethod
    def symbol(s: Symbol) -> Expr:
        return Expr({((s, 1),): 1})

    @staticmethod
    def _atom(a: _Node) -> Expr:
        return Expr({((a, 1),): 1})

    # -- reading -----------------------------------------------------------------------
    @property
    def is_const(self) -> bool:
        return all(not m for m, _ in self.terms)

    @property
    def value(self) -> int:
        """The constant's value (0 for the empty sum)."""
        assert self.is_const, f"{self} is not a constant"
        return self.terms[0][1] if self.terms else 0

    @cached_property
    def symbols(self) -> frozenset[Symbol]:
        out: set[Symbol] = set()
        for m, _ in self.terms:
            for a, _ in m:
                if isinstance(a, Symbol):
                    out.add(a)
                else:
                    for x in a.args:
                        out |= x.symbols
        return frozenset(out)

    @cached_property
    def bounds(self) -> Interval:
        """The least and greatest value over every choice of the symbols within their ranges
        (a sound enclosure). A polynomial of degree one in each atom (``(h - 2) * (w - 2)``,
        expanded) takes its extremes at corners of the atoms' box, so those are evaluated
        (exact over symbols); otherwise, or with many atoms, interval arithmetic term by term."""
        atoms = sorted({a for m, _ in self.terms for a, _ in m}, key=_atom_key)
        if atoms and len(atoms) <= _CORNER_ATOMS and all(p == 1 for m, _ in self.terms for _, p in m):
            boxes = [_atom_bounds(a) for a in atoms]
            values = []
            for corner in itertools.product(*boxes):
                at = dict(zip(atoms, corner))
                values.append(sum(c * math.prod(at[a] for a, _ in m) for m, c in self.terms))
            return min(values), max(values)
        lo = hi = 0
        for m, c in self.terms:
            a, b = 1, 1
            for atom, p in m:
                x, y = _atom_bounds(atom)
                xs = [x**p, y**p] + ([0] if p % 2 == 0 and x < 0 < y else [])
                cand = [a * min(xs), a * max(xs), b * min(xs), b * max(xs)]
                a, b = min(cand), max(cand)
            lo += min(c * a, c * b)
            hi += max(c * a, c * b)
        return lo, hi

    def evaluate(self, env: dict[str, int]) -> int:
        total = 0
        for m, c in self.terms:
            t = c
            for a, p in m:
                t *= _atom_value(a, env) ** p
            total += t
        return total

    # -- arithmetic --------------------------------------------------------------------
    def __add__(self, other: Dimish) -> Expr:
        o = as_expr(other)
        terms = dict(self.terms)
        for m, c in o.terms:
            terms[m] = terms.get(m, 0) + c
        return Expr(terms)

    __radd__ = __add__

    def __neg__(self) -> Expr:
        return Expr({m: -c for m, c in self.terms})

    def __sub__(self, other: Dimish) -> Expr:
        return self + (-as_expr(other))

    def __rsub__(self, other: Dimish) -> Expr:
        return as_expr(other) - self

    def __mul__(self, other: Dimish) -> Expr:
        o = as_expr(other)
        terms: dict[Monomial, int] = {}
        for m1, c1 in self.terms:
            for m2, c2 in o.terms:
                powers: dict[Atom, int] = dict(m1)
                for a, p in m2:
                    powers[a] = powers.get(a, 0) + p
                m = tuple(sorted(powers.items(), key=lambda ap: _atom_key(ap[0])))
                terms[m] = terms.get(m, 0) + c1 * c2
        return Expr(terms)

    __rmul__ = __mul__

    def __floordiv__(self, other: Dimish) -> Expr:
        return floordiv(self, other)

    def __rfloordiv__(self, other: Dimish) -> Expr:
        return floordiv(other, self)

    def __mod__(self, other: Dimish) -> Expr:
        return mod(self, other)

    def __rmod__(self, other: Dimish) -> Expr:
        return mod(other, self)

    # -- order: decided by the ranges, else an error ---------------------------------
    def _decided(self, other: Dimish, what: str, true, false) -> bool:
        """``self <what> other`` when the bounds of their difference decide it: ``true(lo, hi)``
        says it holds everywhere, ``false(lo, hi)`` nowhere."""
        lo, hi = (self - as_expr(other)).bounds
        if true(lo, hi):
            return True
        if false(lo, hi):
            return False
        raise SymbolicError(f"whether {self} {what} {other} depends on the dims' values")

    def __lt__(self, other: Dimish) -> bool:
        return self._decided(other, "<", lambda lo, hi: hi < 0, lambda lo, hi: lo >= 0)

    def __le__(self, other: Dimish) -> bool:
        return self._decided(other, "<=", lambda lo, hi: hi <= 0, lambda lo, hi: lo > 0)

    def __gt__(self, other: Dimish) -> bool:
        return self._decided(other, ">", lambda lo, hi: lo > 0, lambda lo, hi: hi <= 0)

    def __ge__(self, other: Dimish) -> bool:
        return self._decided(other, ">=", lambda lo, hi: lo >= 0, lambda lo, hi: hi < 0)

    def __bool__(self) -> bool:
        if not self.terms:
            return False
        return self._decided(0, "!=", lambda lo, hi: lo > 0 or hi < 0, lambda lo, hi: lo == hi == 0)

    # -- identity ----------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if isinstance(other, int | Expr):
            return self.terms == as_expr(other).terms
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.value) if self.is_const else hash(self.terms)

    def __repr__(self) -> str:
        return f"Expr({self})"

    def __str__(self) -> str:
        if not self.terms:
            return "0"
        out = ""
        for i, (m, c) in enumerate(self.terms):
            factors = [_atom_text(a) if p == 1 else f"{_atom_text(a)}**{p}" for a, p in m]
            mag = abs(c)
            body = "*".join(([str(mag)] if mag != 1 or not factors else []) + factors)
            if i == 0:
                out = ("-" if c < 0 else "") + body
            else:
                out += (" - " if c < 0 else " + ") + body
        return out

    def to_json(self):
        """A tree of ints, symbol names and [op, args...] (ops "+", "*", "//", "tdiv", "%",
        "max", "min") that the runtimes evaluate."""
        terms = []
        for m, c in self.terms:
            factors = [_atom_json(a) for a, p in m for _ in range(p)]
            if c != 1 or not factors:
                factors.insert(0, c)
            terms.append(factors[0] if len(factors) == 1 else ["*", *factors])
        if not terms:
            return 0
        return terms[0] if len(terms) == 1 else ["+", *terms]


def wgsl(e: Dimish, sym: Callable[[str], str], ty: str = "u32") -> str:
    """``e`` as a WGSL expression of type ``ty`` (u32 or i32); ``sym(name)`` is a symbol's u32
    value in the shader. The value must lie in ``ty``'s range at every choice of the symbols.
    A polynomial's terms may come in any order: u32 and i32 arithmetic wrap (two's complement),
    so partial sums that leave the range still give the exact total."""
    e = as_expr(e)
    lo, hi = e.bounds
    if ty == "u32" and (lo < 0 or hi >= 2**32) or ty == "i32" and (lo < -(2**31) or hi >= 2**31):
        raise SymbolicError(f"{e} spans {lo}..{hi}, outside the {ty} range a shader computes it in")
    return _wgsl(e, sym, ty)


def _lit(n: int, ty: str) -> str:
    return f"{n}u" if ty == "u32" else (f"{n}i" if n >= -(2**31) + 1 else f"i32({n + 1}i - 1i)")


def _wgsl(e: Expr, sym: Callable[[str], str], ty: str) -> str:
    if e.is_const:
        return _lit(e.value, ty)
    pos: list[str] = []
    neg: list[str] = []
    for m, c in e.terms:
        if abs(c) >= 2**31:
            raise SymbolicError(f"{e} has a coefficient too large for a shader's 32-bit arithmetic")
        factors = [_atom_wgsl(a, sym, ty) for a, p in m for _ in range(p)]
        if abs(c) != 1 or not factors:
            factors.append(_lit(abs(c), ty))
        (pos if c > 0 else neg).append(" * ".join(factors))
    if len(pos) == 1 and not neg and " " not in pos[0]:
        return pos[0]
    text = " + ".join(pos) if pos else _lit(0, ty)
    return "(" + text + "".join(f" - {t}" for t in neg) + ")"


def _atom_wgsl(a: Atom, sym: Callable[[str], str], ty: str) -> str:
    """An atom in ``ty``: computed in u32 when its operands cannot be negative, else in i32
    (the conversions between them keep the bits, so the wrapping sums stay exact)."""
    if isinstance(a, Symbol):
        return sym(a.name) if ty == "u32" else f"i32({sym(a.name)})"
    x, y = a.args
    signed = x.bounds[0] < 0 or y.bounds[0] < 0
    t = "i32" if signed else "u32"
    X, Y = _wgsl(x, sym, t), _wgsl(y, sym, t)
    if a.kind in ("max", "min"):
        text = f"{a.kind}({X}, {Y})"
    elif not signed or a.kind == "tdiv":  # the divisor is positive (floordiv, tdiv, mod)
        text = f"({X} {'%' if a.kind == 'mod' else '/'} {Y})"
    elif a.kind == "floordiv":  # a negative dividend rounds down, not toward zero
        text = f"select({X} / {Y}, ({X} - {Y} + 1i) / {Y}, {X} < 0i)"
    else:  # mod with a negative dividend: the divisor's sign
        text = f"((({X} % {Y}) + {Y}) % {Y})"
    return text if t == ty else f"{ty}({text})"


def as_expr(x: Dimish) -> Expr:
    if isinstance(x, Expr):
        return x
    if hasattr(x, "dtype") and getattr(x.dtype, "kind", "") in "iu" and getattr(x, "ndim", 1) == 0:
        x = int(x)  # a numpy integer scalar
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"not an integer dim: {x!r}")
    return Expr.const(x)


def simplify(x: Dimish) -> Dimish:
    """A constant expression as a plain int; anything else as it is."""
    if isinstance(x, Expr) and x.is_const:
        return x.value
    return x


def _atom_bounds(a: Atom) -> Interval:
    if isinstance(a, Symbol):
        return a.lo, a.hi
    (alo, ahi), (blo, bhi) = a.args[0].bounds, a.args[1].bounds
    if a.kind in ("max", "min"):
        f = _OPS[a.kind]
        return f(alo, blo), f(ahi, bhi)
    if a.kind == "mod":  # divisor known positive (see mod)
        return (0, bhi - 1) if alo < 0 or ahi >= blo else (alo, ahi)
    # floordiv / tdiv by a positive divisor: monotone in the dividend, antitone in the divisor
    # for a non-negative dividend (made only that way, see floordiv)
    f = _OPS[a.kind]
    cands = [f(x, y) for x in (alo, ahi) for y in (blo, bhi)]
    return min(cands), max(cands)


def _atom_value(a: Atom, env: dict[str, int]) -> int:
    if isinstance(a, Symbol):
        v = env[a.name]
        return v
    x, y = (e.evaluate(env) for e in a.args)
    return _OPS[a.kind](x, y)


def _atom_text(a: Atom) -> str:
    if isinstance(a, Symbol):
        return a.name
    x, y = a.args
    if a.kind in ("max", "min", "tdiv"):
        return f"{a.kind}({x}, {y})"
    op = "//" if a.kind == "floordiv" else "%"
    return f"({_paren(x)} {op} {_paren(y)})"


def _paren(e: Expr) -> str:
    """An operand's text, in parentheses unless it is one plain factor."""
    single = len(e.terms) == 1 and e.terms[0][1] == 1 and len(e.terms[0][0]) == 1 and e.terms[0][0][0][1] == 1
    return str(e) if single or (e.is_const and e.value >= 0) else f"({e})"


def _atom_json(a: Atom):
    if isinstance(a, Symbol):
        return a.name
    return [_JSON_OP[a.kind], *(x.to_json() for x in a.args)]


# -- operations a polynomial cannot hold ---------------------------------------------------
def _positive_divisor(b: Expr, what: str) -> None:
    if b.bounds[0] <= 0:
        raise SymbolicError(f"{what} by {b}, which may be zero or negative over the dims' ranges")


def floordiv(a: Dimish, b: Dimish) -> Expr:
    """``a // b`` (rounding down) for a divisor that is positive over the ranges."""
    a, b = as_expr(a), as_expr(b)
    _positive_divisor(b, "division")
    if b.is_const:
        d = b.value
        if d == 1:
            return a
        if all(c % d == 0 for _, c in a.terms):
            return Expr({m: c // d for m, c in a.terms})
        lo, hi = a.bounds
        if lo // d == hi // d:
            return Expr.const(lo // d)
        # split off the terms divisible by d: (d*q + r) // d == q + r // d
        whole = {m: c // d for m, c in a.terms if c % d == 0}
        rest = {m: c for m, c in a.terms if c % d}
        if whole and rest:
            return Expr(whole) + floordiv(Expr(rest), b)
        # (x // e) // d == x // (e*d) for positive e and d, at every integer x: one form for a
        # size halved three times and the same size divided by 8 (as torch.export writes it)
        if len(a.terms) == 1 and a.terms[0][1] == 1 and len(a.terms[0][0]) == 1:
            atom, power = a.terms[0][0][0]
            if power == 1 and isinstance(atom, _Node) and atom.kind == "floordiv" and atom.args[1].is_const:
                return floordiv(atom.args[0], atom.args[1].value * d)
    elif a == b:
        return Expr.const(1)
    return Expr._atom(_Node("floordiv", (a, b)))


def tdiv(a: Dimish, b: Dimish) -> Expr:
    """ONNX's integer Div (truncating toward zero) for a positive divisor: floor division when
    the dividend cannot be negative."""
    a, b = as_expr(a), as_expr(b)
    _positive_divisor(b, "division")
    if a.bounds[0] >= 0:
        return floordiv(a, b)
    if a.is_const and b.is_const:
        return Expr.const(_OPS["tdiv"](a.value, b.value))
    return Expr._atom(_Node("tdiv", (a, b)))


def mod(a: Dimish, b: Dimish) -> Expr:
    """``a % b`` (the divisor's sign, as ONNX Mod with fmod=0) for a positive divisor."""
    a, b = as_expr(a), as_expr(b)
    _positive_divisor(b, "modulo")
    if b.is_const:
        d = b.value
        rest = {m: c % d for m, c in a.terms if c % d}
        if not rest:
            return Expr.const(0)
        r = Expr(rest)
        lo, hi = r.bounds
        if 0 <= lo and hi < d:
            return r
        if r.is_const:
            return Expr.const(r.value % d)
        a = r
    elif a == b:
        return Expr.const(0)
    return Expr._atom(_Node("mod", (a, b)))


def smax(a: Dimish, b: Dimish) -> Dimish:
    return _extreme("max", a, b)


def smin(a: Dimish, b: Dimish) -> Dimish:
    return _extreme("min", a, b)


def _extreme(kind: str, a: Dimish, b: Dimish) -> Dimish:
    """max or min: the operand the ranges show is the larger (smaller), else an atom. (The
    bounds of ``a - b`` are at least as tight as comparing those of ``a`` and ``b``.)"""
    a, b = as_expr(a), as_expr(b)
    lo, hi = (a - b).bounds
    if lo >= 0 or hi <= 0:
        a_larger = lo >= 0
        return simplify(a if a_larger == (kind == "max") else b)
    x, y = sorted((a, b), key=str)
    return Expr._atom(_Node(kind, (x, y)))


def substitute(e: Dimish, new: dict[str, Dimish]) -> Dimish:
    """``e`` with each symbol named in ``new`` replaced by its expression, simplified."""
    e = as_expr(e)
    if not any(s.name in new for s in e.symbols):
        return simplify(e)
    total: Expr = Expr.const(0)
    for m, c in e.terms:
        term: Expr = Expr.const(c)
        for a, p in m:
            if isinstance(a, Symbol):
                x = as_expr(new.get(a.name, Expr.symbol(a)))
            else:
                x = as_expr(_REBUILD[a.kind](*(substitute(arg, new) for arg in a.args)))
            for _ in range(p):
                term = term * x
        total = total + term
    return simplify(total)


def compare(a: Dimish, b: Dimish) -> int | None:
    """-1, 0 or 1 when ``a`` is below, equal to or above ``b`` for every choice of the symbols
    in their ranges; None when that depends on the choice."""
    d = as_expr(a) - as_expr(b)
    if not d.terms:
        return 0
    lo, hi = d.bounds
    if hi < 0:
        return -1
    if lo > 0:
        return 1
    if lo == hi == 0:
        return 0
    return None


class SymbolicError(ValueError):
    """Shape arithmetic that the dims' ranges cannot decide at compile time."""


# -- text form ------------------------------------------------------------------------------
def parse_expr(text: str, symbols: dict[str, Symbol]) -> Dimish:
    """An expression in the text form ``str`` gives, over the named symbols."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        raise SymbolicError(f"bad dim expression {text!r}: {e.msg}") from None
    return simplify(_from_ast(tree, symbols, text))


def _from_ast(n: ast.AST, symbols: dict[str, Symbol], text: str) -> Expr:
    if isinstance(n, ast.Constant) and isinstance(n.value, int) and not isinstance(n.value, bool):
        return Expr.const(n.value)
    if isinstance(n, ast.Name):
        if n.id not in symbols:
            raise SymbolicError(f"dim expression {text!r} names {n.id!r}, which is no declared dim")
        return Expr.symbol(symbols[n.id])
    if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
        return -_from_ast(n.operand, symbols, text)
    if isinstance(n, ast.BinOp):
        a, b = _from_ast(n.left, symbols, text), _from_ast(n.right, symbols, text)
        if isinstance(n.op, ast.Pow) and b.is_const and 0 <= b.value <= 8:
            return math.prod([a] * b.value, start=Expr.const(1))
        ops = {ast.Add: Expr.__add__, ast.Sub: Expr.__sub__, ast.Mult: Expr.__mul__,
               ast.FloorDiv: floordiv, ast.Mod: mod}  # fmt: skip
        f = ops.get(type(n.op))
        if f is not None:
            return f(a, b)
    if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and len(n.args) == 2 and not n.keywords:
        f = {"max": smax, "min": smin, "tdiv": tdiv}.get(n.func.id)
        if f is not None:
            return as_expr(f(*(_from_ast(x, symbols, text) for x in n.args)))
    raise SymbolicError(f"bad dim expression {text!r}: only integers, dims, + - * // % and max/min/tdiv")


# how each kind of atom is made again from its (substituted) operands
_REBUILD = {"floordiv": floordiv, "tdiv": tdiv, "mod": mod, "max": smax, "min": smin}
