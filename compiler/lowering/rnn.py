"""Recurrent layers: RNN, GRU and LSTM, each one dispatch looping over time.

The recurrence is serial in time but parallel over batch rows, directions and hidden
units, so one workgroup runs one (batch row, direction) through every time step: its
invocations own hidden units, keep the hidden state in workgroup memory (every unit's
next value reads all of it) and the LSTM cell state in registers, and meet at a barrier
between steps. That is a single dispatch per layer instead of one or two per time step,
at the price of one workgroup per sequence; the hidden size is bounded by workgroup memory
(16 KiB: 4096 units, 2048 for a GRU that resets before its linear map).

W, R, B and P are packed into one parameter buffer (on the host when they are constants,
by copy kernels otherwise) so a layer binds at most 8 storage buffers: X, parameters,
initial_h, initial_c, sequence_lens, Y, Y_h, Y_c. sequence_lens may be a run-time input:
steps past a row's length write zeros to Y and leave the state as it was.
"""

from __future__ import annotations

import math

import numpy as np

from onnx2wgsl.ir import Dispatch, DType, Op, TensorType, Value
from onnx2wgsl.ir.kernel import ref
from onnx2wgsl.ir.types import dim_bound

from ..elementwise_ops import f32, helper_code
from . import LowerCtx, binding, decl, is_symbolic, loop_room, lowers, u32
from .elementwise import emit_map, map_dispatch
from .indexing import View, contiguous

# Activation functions of the recurrent ops: WGSL from argument, alpha, beta.
ACTIVATIONS = {
    "Relu": lambda x, a, b: f"max({x}, 0.0f)",
    "Tanh": lambda x, a, b: f"tanh_f32({x})",
    "Sigmoid": lambda x, a, b: f"(1.0f / (1.0f + exp(-{x})))",
    "Affine": lambda x, a, b: f"({a} * {x} + {b})",
    "LeakyRelu": lambda x, a, b: f"select({a} * {x}, {x}, {x} >= 0.0f)",
    "ThresholdedRelu": lambda x, a, b: f"select(0.0f, {x}, {x} > {a})",
    "ScaledTanh": lambda x, a, b: f"({a} * tanh_f32({b} * {x}))",
    "HardSigmoid": lambda x, a, b: f"clamp({a} * {x} + {b}, 0.0f, 1.0f)",
    "Elu": lambda x, a, b: f"select({a} * (exp({x}) - 1.0f), {x}, {x} >= 0.0f)",
    "Softsign": lambda x, a, b: f"({x} / (1.0f + abs({x})))",
    "Softplus": lambda x, a, b: f"log(1.0f + exp({x}))",
}
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
# How many activation functions each direction takes: f (RNN); f, g (GRU); f, g, h (LSTM).
N_ACTIVATIONS = {"RNN": 1, "GRU": 2, "LSTM": 3}

# the names of the kernel's buffers, as its shader text refers to them
_X, _P, _H0, _C0, _SL, _Y, _Yh, _Yc, _St = (
    ref(n) for n in ("X", "P", "H0", "C0", "SL", "Y", "Yh", "Yc", "St")
)


@lowers("RNN", "GRU", "LSTM")
def lower_rnn(ctx: LowerCtx, op: Op) -> None:
    a = op.attrs
    X, W, R, B, SL, H0, C0, P = (op.input(i) for i in range(8))
    kind = op.kind
    G, H = GATES[kind], a["hidden_size"]
    dirs = 2 if a["direction"] == "bidirectional" else 1
    layout = a["layout"]
    T, Bt, In = (X.shape[0], X.shape[1], X.shape[2]) if layout == 0 else (X.shape[1], X.shape[0], X.shape[2])
    if is_symbolic(In):
        raise ctx.error(
            f"{kind} over dims kept symbolic: its input size {In} must be static",
            hint="bind it with --dim NAME=N",
        )
    Bu, Tu = u32(Bt), u32(T)  # (the sequence length and batch may be kept symbolic)
    outs = dict(zip([n for n, m in zip(("Y", "Y_h", "Y_c"), a["outputs"]) if m], op.outputs))
    shared = 2 if kind == "GRU" and not a["linear_before_reset"] else 1
    room = ctx.target.limit("maxComputeWorkgroupStorageSize")
    if shared * H * 4 > room:
        raise ctx.error(
            f"hidden_size {H} needs {shared * H * 4} bytes of workgroup memory; the target allows {room}",
            hint="compile for a target with more workgroup storage",
        )
    wg = min(ctx.target.limit("maxComputeInvocationsPerWorkgroup"), 1 << max(0, math.ceil(math.log2(H))))
    J = math.ceil(H / wg)

    params, offsets = _pack_params(ctx, op, W, R, B, P, dirs, G, H, In)
    off_r, off_b, off_p = offsets

    # index expressions (t = time step, j = hidden unit)
    x_base = f"(t * {Bu} + b) * {In}u" if layout == 0 else f"(b * {Tu} + t) * {In}u"
    y_idx = (
        (lambda t: f"(({t} * {dirs}u + dir) * {Bu} + b) * {H}u + j")
        if layout == 0
        else (lambda t: f"((b * {Tu} + {t}) * {dirs}u + dir) * {H}u + j")
    )
    state_idx = f"(dir * {Bu} + b) * {H}u + j" if layout == 0 else f"(b * {dirs}u + dir) * {H}u + j"

    acts = _activation_code(a, kind, dirs)
    clip = a.get("clip")

    def clipped(e: str) -> str:
        return e if clip is None else f"clamp({e}, {f32(-clip)}, {f32(clip)})"

    def gate(g: int, h_term: str = "dot_h") -> str:
        return f"dot_x(xb, rb + {g * H}u) + {_P}[bb + {g * H}u] + {_P}[bb + {(G + g) * H}u]" + (
            f" + {h_term}(rb + {g * H}u)" if h_term else ""
        )

    f, g_, h_ = acts + [None] * (3 - len(acts))
    private = [f"var hn: array<f32, {J}>;"]
    if kind == "RNN":
        phases = [[f"hn[q] = {f(clipped(gate(0)))};"]]
    elif kind == "GRU":
        z = f"{f(clipped(gate(0)))}"
        r = f"{f(clipped(gate(1)))}"
        if a["linear_before_reset"]:
            h_lin = f"dot_h(rb + {2 * H}u) + {_P}[bb + {(G + 2) * H}u]"
            ht = g_(clipped(f"dot_x(xb, rb + {2 * H}u) + {_P}[bb + {2 * H}u] + r * ({h_lin})"))
            phases = [
                [f"let z = {z};", f"let r = {r};", f"let ht = {ht};", "hn[q] = (1.0f - z) * ht + z * hs[j];"]
            ]
        else:
            # r must be known for every unit before any unit's candidate state: two phases
            private.append(f"var zq: array<f32, {J}>;")
            phases = [
                [f"zq[q] = {z};", f"rh[j] = {r} * hs[j];"],
                [
                    f"let ht = {g_(clipped(gate(2, 'dot_rh')))};",
                    "hn[q] = (1.0f - zq[q]) * ht + zq[q] * hs[j];",
                ],
            ]
    else:  # LSTM: gates i, o, f, c; peepholes i, o, f
        private.append(f"var cs: array<f32, {J}>;")
        peep = P is not None

        def pp(k: int, cell: str) -> str:
            return f" + {_P}[pb + {k * H}u] * {cell}" if peep else ""

        forget = (
            "let fg = 1.0f - ig;"
            if a["input_forget"]
            else f"let fg = {f(clipped(gate(2) + pp(2, 'cs[q]')))};"
        )
        phases = [
            [
                f"let ig = {f(clipped(gate(0) + pp(0, 'cs[q]')))};",
                forget,
                f"let cg = {g_(clipped(gate(3)))};",
                "let c = fg * cs[q] + ig * cg;",
                f"let og = {f(clipped(gate(1) + pp(1, 'c')))};",
                "cs[q] = c;",
                f"hn[q] = og * {h_('c')};",
            ]
        ]
    prologue = [f"let rb = dir * {G * H}u + j;", f"let bb = {off_b}u + dir * {2 * G * H}u + j;"]
    if kind == "LSTM" and P is not None:
        prologue.append(f"let pb = {off_p}u + dir * {3 * H}u + j;")

    # Steps per dispatch: few enough that no invocation loops past the budget (target.LOOP_BUDGET).
    dots = _dot_functions(In, H, off_r, kind == "GRU" and shared == 2)
    # each of the G gates of a unit takes one input and one recurrent dot product (dot_h, or
    # dot_rh of the same length), then every phase and the write-back loop over J units
    trips = {d["name"]: d["trips"] for d in dots}
    per_step = J * (G * (trips["dot_x"] + trips["dot_h"]) + len(phases) + 1) + 1
    # (over a symbolic length: planned at its bound; a dispatch past the run's end does nothing)
    S = max(1, min(dim_bound(T), (loop_room() - 4 * J) // per_step))
    chunks = math.ceil(dim_bound(T) / S)

    reads: list[tuple[str, Value]] = [("X", X), ("P", params)]
    init = [f"hs[j] = {_H0 + '[' + state_idx + ']' if H0 is not None else '0.0f'};"]
    if H0 is not None:
        reads.append(("H0", H0))
    if kind == "LSTM":
        if C0 is not None:
            reads.append(("C0", C0))
        init.append(f"cs[q] = {_C0 + '[' + state_idx + ']' if C0 is not None else '0.0f'};")
    if SL is not None:
        reads.append(("SL", SL))
    writes = [(n, outs[n]) for n in ("Y", "Y_h", "Y_c") if n in outs]
    names = {"Y": "Y", "Y_h": "Yh", "Y_c": "Yc"}
    step_write, skip_write, final = [], [], []
    if "Y" in outs:
        step_write.append(f"{_Y}[{y_idx('t')}] = hn[q];")
        skip_write.append(f"{_Y}[{y_idx('s')}] = 0.0f;")
    if "Y_h" in outs:
        final.append(f"{_Yh}[{state_idx}] = hs[j];")
    if "Y_c" in outs:
        final.append(f"{_Yc}[{state_idx}] = cs[q];")
    reverse = {"forward": "false", "reverse": "true", "bidirectional": "dir == 1u"}[a["direction"]]
    common = dict(
        wg=wg, J=J, H=H, T=Tu, Bt=Bu, kind=kind, helpers=helper_code("tanh"), dots=dots,
        gru_reset_first=shared == 2, private=private, prologue=prologue, phases=phases,
        step_write=step_write, skip_write=skip_write, final=final, x_base=x_base, reverse=reverse,
        seq_len=f"u32({_SL}[b])" if SL is not None else Tu, final_guard=None,
    )  # fmt: skip
    decls = [decl(n, v) for n, v in reads] + [decl(names[n], v, write=True) for n, v in writes]
    bindings = [binding(v) for _, v in reads] + [binding(v, write=True) for _, v in writes]
    if chunks == 1:
        shader = ctx.shader("rnn.wgsl.j2", decls=decls, init=init, S=Tu, what=f"all {T} steps",
                            chunked=False, resume=False, save=[], counter_at=0, **common)  # fmt: skip
        ctx.kernel([v for _, v in reads], [v for _, v in writes], [Dispatch(shader, (Bt, dirs, 1), bindings)])
        return

    # Long sequences: `chunks` dispatches of S steps each. The hidden (and cell) state and a
    # step counter per sequence carry over in a scratch buffer; the first dispatch starts from
    # the initial state, the others resume from the scratch, and the last writes Y_h, Y_c.
    n = dirs * dim_bound(Bt) * H  # (slots for the most sequences a run may have)
    cells = n if kind == "LSTM" else 0
    state = ctx.temp(
        TensorType(DType.f32, (n + cells + dirs * dim_bound(Bt),)), f"{op.outputs[0].name}.rnn_state"
    )
    slot = f"ci * {H}u + j"
    save = [f"{_St}[{slot}] = hs[j];"] + ([f"{_St}[{n}u + {slot}] = cs[q];"] if cells else [])
    resume = [f"hs[j] = {_St}[{slot}];"] + ([f"cs[q] = {_St}[{n}u + {slot}];"] if cells else [])
    st_decl, st_binding = decl("St", state, write=True), binding(state, write=True)
    first = ctx.shader(
        "rnn.wgsl.j2", decls=decls + [st_decl], init=init, S=f"{S}u", what=f"its first {S} of {T} steps",
        chunked=True, resume=False, save=save, counter_at=n + cells, **common,
    )  # fmt: skip
    rest_reads = [(k, v) for k, v in reads if k not in ("H0", "C0")]
    rest_decls = [decl(k, v) for k, v in rest_reads] + [decl(names[k], v, write=True) for k, v in writes]
    # over a symbolic length, the dispatches past the run's last step write nothing
    guard = {"final_guard": "s0 < " + Tu} if is_symbolic(T) else {}
    rest = ctx.shader(
        "rnn.wgsl.j2", decls=rest_decls + [st_decl], init=resume, S=f"{S}u",
        what=f"the next {S} of {T} steps, from the state the dispatch before left",
        chunked=True, resume=True, save=save, counter_at=n + cells, **{**common, **guard},
    )  # fmt: skip
    rest_bindings = [binding(v) for _, v in rest_reads] + [binding(v, write=True) for _, v in writes]
    dispatches = [Dispatch(first, (Bt, dirs, 1), bindings + [st_binding])]
    dispatches += [Dispatch(rest, (Bt, dirs, 1), rest_bindings + [st_binding])] * (chunks - 1)
    ctx.kernel([v for _, v in reads], [v for _, v in writes] + [state], dispatches)


def _dot_functions(In: int, H: int, off_r: int, with_rh: bool) -> list[dict]:
    """The dot products of a gate row, four products per loop trip (a quarter of the loop
    back-edges, and fewer loop overheads): input part X[t, b, :] . W[row, :], recurrent part
    h . R[row, :], and (GRU resetting first) (r * h) . R[row, :]."""
    U = 4

    def dot(name, params, a, w, n, comment):
        trips = n // U
        body = " + ".join(f"{a(f'k + {u}u')} * {w(f'k + {u}u')}" for u in range(U))
        tail = [f"{a(f'{k}u')} * {w(f'{k}u')}" for k in range(trips * U, n)]
        return {"name": name, "params": params, "trips": trips, "unroll": U, "body": body, "tail": tail,
                "comment": comment}  # fmt: skip

    out = [
        dot("dot_x", "xb: u32, row: u32", lambda k: f"{_X}[xb + {k}]", lambda k: f"{_P}[row * {In}u + {k}]", In,
            "input part of a gate row: X[t, b, :] . W[row, :]"),
        dot("dot_h", "row: u32", lambda k: f"hs[{k}]", lambda k: f"{_P}[{off_r}u + row * {H}u + {k}]", H,
            "recurrent part of a gate row: h[:] . R[row, :]"),
    ]  # fmt: skip
    if with_rh:
        out.append(dot("dot_rh", "row: u32", lambda k: f"rh[{k}]", lambda k: f"{_P}[{off_r}u + row * {H}u + {k}]",
                       H, "(r * h)[:] . R[row, :]"))  # fmt: skip
    return out


def _activation_code(a: dict, kind: str, dirs: int) -> list:
    """Per activation slot (f, g, h): a function of an argument expression giving WGSL, which
    picks the direction's own activation when the two directions differ."""
    n = N_ACTIVATIONS[kind]
    acts = list(zip(a["activations"], a["activation_alpha"], a["activation_beta"]))  # n per direction
    out = []
    for k in range(n):
        per_dir = [acts[d * n + k] for d in range(dirs)]

        def fn(x: str, per_dir=per_dir) -> str:
            exprs = [ACTIVATIONS[name](f"({x})", f32(al), f32(be)) for name, al, be in per_dir]
            if len(set(exprs)) == 1:
                return exprs[0]
            return f"select({exprs[0]}, {exprs[1]}, dir == 1u)"

        out.append(fn)
    return out


def _pack_params(ctx: LowerCtx, op: Op, W, R, B, P, dirs, G, H, In) -> tuple[Value, tuple[int, int, int]]:
    """One buffer holding W, R, B (zeros if absent) and P (LSTM peepholes): offsets of R, B, P."""
    sizes = [dirs * G * H * In, dirs * G * H * H, dirs * 2 * G * H, dirs * 3 * H if P is not None else 0]
    offsets = [0]
    for s in sizes[:-1]:
        offsets.append(offsets[-1] + s)
    parts = [W, R, B, P]
    if all(v is None or v.is_const for v in parts):
        data = [
            np.zeros(s, np.float32) if v is None else np.asarray(v.data, np.float32).reshape(-1)
            for v, s in zip(parts, sizes)
        ]
        return ctx.const(np.concatenate(data), f"{W.name}.packed", dtype=W.dtype), tuple(offsets[1:])
    total = sum(sizes)
    packed = ctx.temp(TensorType(W.dtype, (total,)), f"{W.name}.packed")
    dispatches = []
    for v, s, off in zip(parts, sizes, offsets):
        if s == 0:
            continue
        if v is None:
            dispatches.append(map_dispatch(ctx, (s,), [], (packed, View(off, (1,))), lambda _: "0.0f"))
        else:
            dispatches.append(
                map_dispatch(ctx, (s,), [(v, contiguous((s,)))], (packed, View(off, (1,))), lambda x: x[0])
            )
    emit_map(ctx, [v for v in parts if v is not None], packed, dispatches)
    return packed, tuple(offsets[1:])
