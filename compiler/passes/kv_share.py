"""A decoder's KV cache written in place: for a graph compiled for generation (its metadata's
``generation`` record, compiler/generation.py), each state pair whose present is

    present = Concat(past, new, axis=2)      past [B, H, past_len, D], new [B, H, seq, D]

read by nothing but fused ``Attention`` ops (as their K or V, 4-D, over past_len + seq keys)
becomes a buffer of the max length that is its past and its present at once: the past input
is made [B, H, max_length, D], the Concat a ``KVCacheWrite`` of the new rows at row past_len
into the past's bytes (compiler/lowering/kv_cache.py: the present is the past, written in
place; one write for the K and V an Attention reads, which with its Q may be the parts of one
Split, GPT-2's: then both read the Split's input and the Split goes), and each Attention reading it is told the buffer's length (kv_len) and the valid one
(``seqlens_k``: past_len + seq - 1 per batch row, written from the dims uniform), so that it
walks the valid keys alone and never the unused tail. The pair is recorded ``shared``: the
runtime copies nothing between steps (runtime/generate.py).

This is the form torch's exporters and optimum give (Llama's, GPT-2's; GQA's repeat_kv is a
view the attention fusion already reads through). A Concat of another form, a present read by
anything else, or an Attention whose masks or outputs depend on the keys' count otherwise,
keeps the copy: nothing of that pair, nor of any pair an Attention reads beside it, changes.
"""

from __future__ import annotations

from onnx2wgsl.ir import DType, Graph, Op, TensorType, Value
from onnx2wgsl.ir.symbolic import Expr, Symbol, parse_expr, simplify, substitute

from . import Pass, PassResult
from .attention_fusion import _resolve
from .dce import DeadCodeElimination
from .patterns import _Uses

# the Attention attributes whose meaning a longer key buffer would change, at their defaults
_PLAIN = {"past_len": 0, "is_causal": 0, "qk_matmul_output_mode": 0, "left_window_size": -1,
          "right_window_size": -1}  # fmt: skip


def _eq(a, b) -> bool:
    return simplify(a) == simplify(b)


class ShareKVCache(Pass):
    """Write each shareable present (see the module doc) into its past's buffer in place."""

    name = "share-kv-cache"

    def run(self, g: Graph) -> PassResult:
        gen = g.metadata.get("generation")
        if not gen or gen.get("total_dim") or gen.get("past_dim") not in g.symbols:
            return PassResult(g, False)
        seq_sym = g.symbols.get(gen.get("sequence_dim"))
        past_sym = g.symbols[gen["past_dim"]]
        past = Expr.symbol(past_sym)
        seq = Expr.symbol(seq_sym) if seq_sym is not None else 1  # (a fixed one-token step)
        names = g.metadata.get("input_names", [v.name for v in g.inputs])
        out_names = g.metadata.get("output_names", [v.name for v in g.outputs])
        inputs = dict(zip(names, g.inputs))
        outputs = dict(zip(out_names, g.outputs))
        # the total length must be the attention mask's own dim: the runtime binds it there
        mask = inputs.get(gen.get("attention_mask", ""))
        if mask is None or mask.type.rank != 2 or not _eq(mask.shape[1], past + seq):
            return PassResult(g, False)
        pairs = {}  # id(present) -> (state record, past input)
        for s in gen.get("state", ()):
            if not s.get("shared") and s["past"] in inputs and s["present"] in outputs:
                pairs[id(outputs[s["present"]])] = (s, inputs[s["past"]])
        u = _Uses(g)
        n = gen["max_length"]
        plans: dict[int, tuple] = {}  # id(present) -> (concat, past input, new rows, links, record)
        for present_id, (record, past_in) in pairs.items():
            present = outputs[record["present"]]
            found = _concat(u, present, past_in, past, seq)
            if found is not None and sum(v is present for v in g.outputs) == 1:  # (no other output)
                plans[present_id] = (*found, record)
        # every Attention reading a shareable present: K and V both shareable, and nothing
        # else reading either present; else the pairs it reads keep the copy
        attentions: dict[int, Op] = {}
        for present_id in list(plans):
            present = plans[present_id][0].outputs[0]
            readers = u.users(present)
            if not readers or any(not _plain(op, past, seq) for op in readers):
                plans.pop(present_id)
                continue
            attentions.update((id(op), op) for op in readers)
        changed = True
        while changed:  # an Attention whose K or V keeps the copy: both keep it
            changed = False
            for op in attentions.values():
                kv = [id(op.inputs[1]), id(op.inputs[2])]
                if any(k in plans for k in kv) and not all(k in plans for k in kv):
                    for k in kv:
                        changed |= plans.pop(k, None) is not None
        attentions = {k: op for k, op in attentions.items() if id(op.inputs[1]) in plans}
        if not plans:
            return PassResult(g, False)
        batch = mask.shape[0]
        if not isinstance(batch, int):
            return PassResult(g, False)  # (generation binds the batch; an IR graph may not)
        # the past's length is the total less the sequence from now on: every value the writes
        # leave must stay a size over (total, sequence)
        replaced = {id(v) for p in plans.values() for v in (p[1], *p[3])}
        total = Symbol(_fresh(g, "total_sequence_length"), 1, n)
        sub = _Substitution(g.symbols, past_sym.name, total, seq_sym)
        for v in g.values():
            if id(v) not in replaced and not v.is_const and _negative(sub(v.shape)):
                return PassResult(g, False)
        if any(op.kind != "DimValue" and _negative(sub(op.attrs)) for op in g.ops):
            return PassResult(g, False)  # (a DimValue computes in i32: a difference is fine there)
        # each row's valid keys less one (GroupQueryAttention's seqlens_k), from the dims uniform
        seqlens = g.make_op("DimValue", [], [TensorType(DType.i32, (batch,))], {"values": [str(past + seq - 1)] * batch},
                            name="kv_share/seqlens_k", out_names=["kv_share/seqlens_k"])  # fmt: skip
        # one write per Attention for its K and V (each read by it alone), else one per present
        groups, grouped = [], set()
        for op in attentions.values():
            kv = [id(op.inputs[1]), id(op.inputs[2])]
            presents = [plans[k][0].outputs[0] for k in kv]
            if not grouped & set(kv) and all(len(u.users(v)) == 1 for v in presents):
                if presents[0].shape[:2] == presents[1].shape[:2]:
                    groups.append([plans[k] for k in kv])
                    grouped.update(kv)
        groups += [[p] for k, p in plans.items() if k not in grouped]
        put: dict[int, Op | None] = {}
        for group in groups:
            for concat, past_in, _, _, record in group:
                present = concat.outputs[0]
                B, H, _, D = present.shape
                past_in.type = present.type = TensorType(present.dtype, (B, H, n, D))
                concat.detach()
                record["shared"] = True
            reads = [new for _, _, new, _, _ in group]
            attrs = {"batch": B, "heads": H, "new_len": seq, "start": past,
                     "new_3d": [int(r.is_3d) for r in reads], "new_row": [r.row if r.is_3d else 0 for r in reads]}  # fmt: skip
            last = max((p[0] for p in group), key=lambda o: u.order[id(o)])  # (after every new row)
            ins = [p[1] for p in group] + [r.value for r in reads]
            put.update({id(p[0]): None for p in group})
            put[id(last)] = Op("KVCacheWrite", ins, [p[0].outputs[0] for p in group], attrs, name=last.name)
        for op in attentions.values():
            op.attrs.update(kv_len=n, seqlens_k=1)
            while len(op.inputs) < 5:
                op.inputs.append(None)
            op.set_input(4, seqlens.outputs[0])
        first = min(u.order[id(op)] for op in attentions.values())
        ops = [put.get(id(op), op) for op in g.ops]
        ops.insert(first, seqlens)
        g.ops = [op for op in ops if op is not None]
        DeadCodeElimination().run(g)  # the identity Concats and head layouts the writes read past
        outs = {id(v) for v in g.outputs}
        if [op for op in attentions.values() if _absorb_split(op, op.inputs[1].producer, outs)]:
            DeadCodeElimination().run(g)
        sub.apply(g)
        gen["total_dim"] = total.name
        return PassResult(g, True)


def _absorb_split(att: Op, write: Op | None, outputs: set[int]) -> bool:
    """Q, K and V the parts of one Split of a 3-D value's last axis (GPT-2's), Q read by the
    Attention alone and K and V by the write alone: both read the Split's input at the parts'
    offsets instead, and the Split goes."""
    q, a = att.inputs[0], att.attrs
    sp = q.producer
    if write is None or write.kind != "KVCacheWrite" or len(write.outputs) != 2 or write.inputs[1] is None:
        return False
    if sp is None or sp.kind != "Split" or sp.domain or not a.get("q_3d") or "q_row" in a or "q_offset" in a:
        return False
    src, news = sp.inputs[0], write.inputs[2:]
    if (
        src.type.rank != 3
        or sp.attrs.get("axis") not in (2, -1)
        or tuple(src.shape[:2]) != tuple(q.shape[:2])
    ):
        return False
    widths = [v.shape[-1] for v in sp.outputs]
    if not all(isinstance(x, int) for x in widths) or not all(write.attrs["new_3d"]):
        return False
    if any(v.producer is not sp for v in news) or len({id(v) for v in (q, *news)}) != 3:
        return False
    if q.uses != [att] or any(v.uses != [write] for v in news) or any(id(v) in outputs for v in sp.outputs):
        return False
    if any(v.uses for v in sp.outputs if v not in (q, *news)):
        return False
    offset = {id(v): sum(widths[:i]) for i, v in enumerate(sp.outputs)}
    a.update(q_row=src.shape[2], q_offset=offset[id(q)])
    write.attrs.update(new_row=[src.shape[2]] * 2, new_offset=[offset[id(v)] for v in news])
    att.set_input(0, src)
    for c in range(2):
        write.set_input(2 + c, src)
    return True


def _negative(x) -> bool:
    """Whether some dim expression in ``x`` (a shape, attributes) may be negative."""
    if isinstance(x, Expr):
        return x.bounds[0] < 0
    if isinstance(x, (list, tuple)):
        return any(_negative(i) for i in x)
    if isinstance(x, dict):
        return any(_negative(i) for i in x.values())
    return False


def _fresh(g: Graph, name: str) -> str:
    while name in g.symbols:
        name += "_"
    return name


class _Substitution:
    """Dims over the past's length made dims over the total (the past: total - sequence)."""

    def __init__(self, symbols: dict[str, Symbol], past: str, total: Symbol, seq: Symbol | None):
        self.past, self.total = past, total
        self.new = {past: Expr.symbol(total) - (Expr.symbol(seq) if seq else 1)}
        self.old = symbols

    def __call__(self, x):
        if isinstance(x, Expr):
            return substitute(x, self.new) if any(s.name == self.past for s in x.symbols) else x
        if isinstance(x, list):
            return [self(i) for i in x]
        if isinstance(x, tuple):
            return tuple(self(i) for i in x)
        if isinstance(x, dict):
            return {k: self(i) for k, i in x.items()}
        return x

    def apply(self, g: Graph) -> None:
        """Every value's shape, op attribute and DimValue expression of ``g`` substituted, and
        the total declared in the past's place among the dims (their order is the uniform's)."""
        for v in g.values():
            if not v.is_const:
                v.type = TensorType(v.dtype, self(v.type.shape))
        for op in g.ops:
            if op.kind == "DimValue":
                op.attrs["values"] = [str(self(parse_expr(t, self.old))) for t in op.attrs["values"]]
            else:
                op.attrs = self(op.attrs)
        g.symbols = {(self.total.name if k == self.past else k): (self.total if k == self.past else s)
                     for k, s in g.symbols.items()}  # fmt: skip


def _concat(u: _Uses, present: Value, past_in: Value, past: Expr, seq) -> tuple | None:
    """(the Concat, the past input, how the new rows are read, the values between) when ``present`` is
    Concat(past, new, axis=2) of the past input (through single-input Concats: an identity
    torch's exporter leaves) read by nothing else, else None."""
    op = present.producer
    if op is None or op.kind != "Concat" or op.domain or len(op.inputs) != 2 or present.type.rank != 4:
        return None
    if op.attrs.get("axis") not in (2, -2) or present.dtype != past_in.dtype:
        return None
    x, new = op.inputs
    reader, links = op, []
    while True:  # each link read by the next alone
        if x is new or u.users(x) != [reader]:
            return None
        if x is past_in:
            break
        p = x.producer
        if p is None or p.kind != "Concat" or p.domain or len(p.inputs) != 1 or not u.internal(x):
            return None
        links.append(x)
        reader, x = p, p.inputs[0]
    B, H, P, D = present.shape
    if not (_eq(P, past + seq) and _eq(past_in.shape[2], past) and tuple(past_in.shape[:2]) == (B, H)):
        return None
    if new.type.rank != 4 or not all(_eq(a, b) for a, b in zip(new.shape, (B, H, seq, D))):
        return None
    if not all(isinstance(d, int) for d in (B, H, D)) or past_in.shape[3] != D:
        return None
    read = _resolve(new, B, H, seq, D, kv=False)
    if read is None or (read.is_3d and read.offset):
        return None
    return op, past_in, read, links


def _plain(op: Op, past: Expr, seq) -> bool:
    """Whether ``op`` is a fused Attention reading its K and V 4-D over past + seq keys, with no
    key count of its own (seqlens, nonpad_kv_seqlen) nor a QK output: one that may read a
    longer buffer told the valid length."""
    a = op.attrs
    if op.kind != "Attention" or op.domain or len(op.outputs) != 1 or op.input(4) is not None:
        return False
    if any(a.get(k, v) != v for k, v in _PLAIN.items()) or a.get("seqlens_k") or a.get("padded_prompt"):
        return False
    if a.get("kv_3d") or a.get("k_3d") or a.get("v_3d") or not _eq(a["kv_len"], past + seq):
        return False
    mask = op.input(3)
    if mask is not None and not _eq(mask.shape[-1], past + seq):
        return False
    return op.inputs[1] is not op.inputs[2]
