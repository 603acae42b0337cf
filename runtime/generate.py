"""Token-by-token generation from an artifact compiled for it (``compile --max-length``).

The artifact's decoder runs the prompt in one step (or in pieces of ``--max-prompt``) and then
one token per step. Everything a
step needs exists after load (the session's buffers, pipelines and bind groups, sized at the
bounds, and one small read-back buffer), so a step only writes the token ids, mask and
positions (a few bytes), encodes the recorded dispatches, copies every present into its past's
slot on the GPU as both are stored (f16, 2 bytes an element, under ``--precision fp16``; none
where the present is its past's own buffer, written in place: the manifest's ``shared``
pairs), and reads back the chosen token id: 4 bytes. The compiler appended the
choice (``next_token``, and ``sampled_token`` with ``--sample-candidates``) and put the pasts
in buffers that hold no output (compiler/generation.py).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from onnx2wgsl.errors import InputError, first_line

from . import manifest as mf
from .session import InferenceSession, encode_pass


class Generator:
    """Generation on the GPU (greedy, or sampled), the KV cache kept there between steps.

    ``generate`` continues after what an earlier call left in the cache (a conversation goes
    on); ``reset`` forgets it. The sequence (everything fed and generated) holds at most the
    artifact's ``max_length`` tokens. Do not ``run`` the session while generating: its past
    inputs' slots hold the cache."""

    def __init__(self, directory: str | os.PathLike, **session_options: Any):
        import wgpu

        self.session = s = InferenceSession(directory, **session_options)
        gen = s.manifest.get("generation")
        if gen is None:
            raise InputError(
                f"{str(directory)!r} is not compiled for generation; compile the decoder with "
                "`onnx2wgsl compile MODEL.onnx -o DIR --max-length N`"
            )
        self.max_length: int = gen["max_length"]
        inputs = {io["name"]: io for io in s.manifest["inputs"]}
        outputs = {io["name"]: io for io in s.manifest["outputs"]}
        self._ids = inputs[gen["input_ids"]]
        self._mask = inputs.get(gen.get("attention_mask", ""))
        self._positions = inputs.get(gen.get("position_ids", ""))
        self._token = outputs[gen["next_token"]]
        sampling = gen.get("sampling")
        self._params = inputs[sampling["params"]] if sampling else None
        self._sampled = outputs[sampling["token"]] if sampling else None
        # the pairs the runtime copies; a shared present is its past's own buffer, written in place
        self._state = [
            (inputs[p["past"]], outputs[p["present"]]) for p in gen["state"] if not p.get("shared")
        ]
        self._logits = outputs.get(gen.get("logits", ""))
        self._seq, self._past = gen["sequence_dim"], gen["past_dim"]
        self._total = gen.get("total_dim")  # the mask's length, where the pasts hold max_length
        self._chunk = s.symbols.get(self._seq, (1, 1))[1]  # the most tokens one step takes
        others = [k for k in s.symbols if k not in (self._seq, self._past, self._total)]
        batch = self._ids["shape"][0]
        if others or not isinstance(batch, int) or batch < 1:
            raise InputError(
                f"generation needs every dim but the sequence and past fixed: compile with --dim for "
                f"{others or ['the batch dim']}"
            )
        self.batch: int = batch  # sequences generated at once
        fed = (
            {gen["input_ids"]}
            | {io["name"] for io in (self._mask, self._positions, self._params) if io}
            | {p["past"] for p in gen["state"]}
        )
        rest = [n for n in inputs if n not in fed and "default" not in inputs[n]]
        if rest:
            raise InputError(f"generation feeds no value to the model's inputs {rest}")
        # what a step writes and reads must be shaped as the model's roles say
        k = min(2, self._chunk)  # new tokens at a step after one cached
        env = {self._seq: k, self._past: 1, **({self._total: 1 + k} if self._total else {})}
        want = [(self._ids, [batch, k]), (self._mask, [batch, 1 + k]), (self._positions, [batch, k]),
                (self._params, [4 + batch]), (self._token, [batch, 1]), (self._sampled, [batch, 1])]  # fmt: skip
        for io, shape in want:
            if io is not None and [mf.evaluate(d, env) for d in io["shape"]] != shape:
                raise InputError(f"{io['name']!r} is not shaped as generation needs ({io['shape']})")
        # a present fed back is its past at the next step: their shapes must agree
        nxt = {self._seq: 1, self._past: 1 + k, **({self._total: 2 + k} if self._total else {})}
        for past, present in self._state:
            if [mf.evaluate(d, env) for d in present["shape"]] != [
                mf.evaluate(d, nxt) for d in past["shape"]
            ]:
                raise InputError(
                    f"present {present['name']!r} is not shaped as past {past['name']!r} one step on"
                )
        self._readback = s.device.create_buffer(
            size=max(self._token["size"], 4),
            usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST,
            label="next token",
        )
        self._vocab = self._logits["shape"][-1] if self._logits is not None else None
        if not isinstance(self._vocab, int) or [mf.evaluate(d, env) for d in self._logits["shape"]] != [
            batch,
            k,
            self._vocab,
        ]:
            self._logits = None  # (then output_logits is refused)
        # the last position's logits, read back only when asked for (``output_logits``)
        self._logits_readback = (
            s.device.create_buffer(
                size=4 * batch * self._vocab,
                usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST,
                label="logits",
            )
            if self._logits is not None
            else None
        )
        # at a sequence's first step the cache starts empty: slots not empty at past 0 are cleared
        start = {self._seq: 1, self._past: 0, **({self._total: 1} if self._total else {})}
        self._cleared = [p for p, _ in self._state if math.prod(mf.evaluate(d, start) for d in p["shape"])]
        self._ones = np.ones(batch * self.max_length, np.int32)
        self._arange = np.arange(self.max_length, dtype=np.int32)
        self.reset()

    def reset(self) -> None:
        """Forget the sequence: the next ``generate`` starts from an empty cache."""
        self._cached = 0  # positions whose keys and values are in the past slots
        self._pending = np.zeros((self.batch, 0), np.int64)  # the last chosen tokens, not yet fed

    def generate(
        self,
        prompt_ids: Iterable[int] | np.ndarray,
        max_new_tokens: int = 64,
        eos_token_id: int | Iterable[int] | None = None,
        *,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        seed: int | None = None,
        output_logits: bool = False,
    ) -> Iterator[Any]:
        """Feed ``prompt_ids`` (after the sequence so far), then choose up to ``max_new_tokens``
        tokens, yielding each id as soon as it is chosen; stops after an end token
        (``eos_token_id``, yielded too) or when the sequence reaches the max length.

        Greedy unless a sampling option is given (an artifact compiled with
        ``--sample-candidates K``): ``temperature`` (default 1; 0 is greedy), ``top_k`` (of
        the K candidates; default all K), ``top_p`` (default 1), ``repetition_penalty``
        (default 1; alone, it is greedy over the penalized logits) and ``seed`` (of the host's
        uniform draw per step, the only randomness; default fresh). ``output_logits`` yields
        (id, the last position's logits) pairs instead, reading the logits back too.

        An artifact compiled for a batch of B > 1 (``--dim batch_size=B``) takes B prompts of
        one length (a [B, n] array) and yields an array of B ids a step, until every sequence
        has ended (a sequence's ids after its end token mean nothing)."""
        if max_new_tokens < 0:
            raise InputError(f"max_new_tokens must be 0 or more, not {max_new_tokens}")
        prompt = np.asarray(prompt_ids if isinstance(prompt_ids, np.ndarray) else list(prompt_ids), np.int64)
        if self.batch == 1 and prompt.ndim == 1:
            prompt = prompt[None]
        if prompt.ndim != 2 or prompt.shape[0] != self.batch:
            raise InputError(
                f"the artifact generates {self.batch} sequence(s) at once: give the prompts as a "
                f"[{self.batch}, n] array of token ids, got shape {list(prompt.shape)}"
            )
        eos = {int(eos_token_id)} if isinstance(eos_token_id, (int, np.integer)) else set(eos_token_id or ())
        feed = np.concatenate([self._pending, prompt], axis=1)
        if not feed.shape[1]:
            raise InputError("generate needs at least one prompt token to start from")
        if self._cached + feed.shape[1] > self.max_length:
            raise InputError(
                f"the sequence would hold {self._cached + feed.shape[1]} tokens, more than the artifact's "
                f"max length {self.max_length}; reset() or recompile with a larger --max-length"
            )
        params = self._sampling(temperature, top_k, top_p, repetition_penalty)
        draws = uniforms(seed) if params is not None else None
        if output_logits and self._logits is None:
            raise InputError("this artifact names no logits output to read back")
        steps = self._tokens(feed, max_new_tokens, eos, params, draws, output_logits)
        return steps if max_new_tokens else iter(())

    def _sampling(self, temperature, top_k, top_p, penalty) -> np.ndarray | None:
        """The sampling inputs but the draw: [temperature, top_k, top_p, penalty, 0], or None
        for the greedy choice."""
        if temperature is None and top_k is None and top_p is None and penalty in (None, 1, 1.0):
            return None
        if self._params is None:
            raise InputError(
                "this artifact chooses greedily only; compile with --sample-candidates K to sample on the GPU"
            )
        t = 1.0 if temperature is None else float(temperature)
        k, p = 0 if top_k is None else int(top_k), 1.0 if top_p is None else float(top_p)
        r = 1.0 if penalty is None else float(penalty)
        if t < 0 or k < 0 or not 0 < p <= 1 or r <= 0:
            raise InputError(
                "sampling needs temperature >= 0, top_k >= 0, 0 < top_p <= 1 and repetition_penalty > 0"
            )
        if t == 0 or temperature is None and top_k is None and top_p is None:
            t, k = 1.0, 1  # greedy (over the penalized logits)
        return np.array([t, k, p, r] + [0.0] * self.batch, np.float32)

    def _tokens(
        self, feed: np.ndarray, count: int, eos: set[int], params, draws, logits: bool
    ) -> Iterator[Any]:
        self._pending = feed[:, :0]
        ended = np.zeros(self.batch, bool)
        for _ in range(count):
            if params is not None:
                params[4:] = [next(draws) for _ in range(self.batch)]
            chunk = self._chunk  # a prompt longer than a step takes runs in pieces
            while feed.shape[1] > chunk:
                self._step(feed[:, :chunk], params, read=False)
                feed = feed[:, chunk:]
            tokens = self._step(feed, params, logits=logits)
            self._pending = tokens[:, None]
            chosen = int(tokens[0]) if self.batch == 1 else tokens
            if logits:
                values = np.frombuffer(InferenceSession._read_mapped(self._logits_readback), np.float32)
                values = values.reshape(self.batch, self._vocab)
                yield chosen, values[0] if self.batch == 1 else values
            else:
                yield chosen
            ended |= np.isin(tokens, list(eos))
            if ended.all() or self._cached + 1 >= self.max_length:
                return  # (the sequence is full once the token is in it)
            feed = tokens[:, None]

    def _step(
        self, feed: np.ndarray, params: np.ndarray | None = None, read: bool = True, logits: bool = False
    ) -> np.ndarray:
        """One run: ``feed`` ([batch, n]) after the cached positions; returns the chosen tokens
        (sampled with ``params``, else the greedy ones; nothing read back unless ``read``)."""
        s = self.session
        n, past = feed.shape[1], self._cached
        values = tuple(n if k == self._seq else past + n if k == self._total else past for k in s.symbols)
        steps, shapes = s._plan(values)
        q = s.device.queue
        if s._dims is not None and values != s._dims_written:
            q.write_buffer(s._dims, 0, np.array(values + (0,) * (-len(values) % 4), dtype=np.uint32))
            s._dims_written = values
        q.write_buffer(
            s.buffers[self._ids["buffer"]], self._ids["offset"], np.ascontiguousarray(feed, np.int32)
        )
        if self._mask is not None:
            q.write_buffer(
                s.buffers[self._mask["buffer"]], self._mask["offset"], self._ones[: self.batch * (past + n)]
            )
        if self._positions is not None:
            io = self._positions
            q.write_buffer(
                s.buffers[io["buffer"]], io["offset"], np.tile(self._arange[past : past + n], self.batch)
            )
        if self._params is not None:
            q.write_buffer(
                s.buffers[self._params["buffer"]],
                self._params["offset"],
                params if params is not None else np.array([1, 1, 1, 1] + [0] * self.batch, np.float32),
            )
        enc = s.device.create_command_encoder()
        if past == 0:
            for io in self._cleared:
                enc.clear_buffer(s.buffers[io["buffer"]], io["offset"], io["size"])
        encode_pass(enc, steps)
        tok = self._token if params is None else self._sampled
        if read:
            enc.copy_buffer_to_buffer(
                s.buffers[tok["buffer"]], tok["offset"], self._readback, 0, 4 * self.batch
            )
        if logits:  # each row's last position: [batch, n, vocab] in the logits slot
            row = 4 * self._vocab
            for b in range(self.batch):
                at = self._logits["offset"] + row * (b * n + n - 1)
                enc.copy_buffer_to_buffer(
                    s.buffers[self._logits["buffer"]], at, self._logits_readback, b * row, row
                )
        if past + n < self.max_length:  # the next step's past: on the GPU, into the past slots
            for past_io, present in self._state:
                nbytes = mf.stored_nbytes(present["storage"], math.prod(shapes[present["name"]]))
                if nbytes:
                    enc.copy_buffer_to_buffer(
                        s.buffers[present["buffer"]],
                        present["offset"],
                        s.buffers[past_io["buffer"]],
                        past_io["offset"],
                        nbytes,
                    )
        q.submit([enc.finish()])
        self._cached = past + n
        if not read:
            return feed[:, :0]
        raw = InferenceSession._read_mapped(self._readback)
        return np.frombuffer(raw, np.int32, self.batch).astype(np.int64)

    def generate_text(
        self, prompt: str, tokenizer: str | os.PathLike | Any, max_new_tokens: int = 64, **options: Any
    ) -> Iterator[str]:
        """``generate`` in text: ``prompt`` encoded by ``tokenizer`` (a Hugging Face
        tokenizer.json path, or a ``tokenizers.Tokenizer``; needs the tokenizers package: pip
        install 'onnx2wgsl[text]'), yielding the text each new token adds (decoded as a whole,
        so a token that completes a character the one before began yields it whole)."""
        tok = load_tokenizer(tokenizer)
        ids = tok.encode(prompt).ids
        if self.batch != 1:
            raise InputError("generate_text runs one sequence; give a batch's prompts as ids to generate")
        out: list[int] = []
        shown = ""
        for token in self.generate(ids, max_new_tokens, **options):
            out.append(token)
            text = tok.decode(out)
            if text.startswith(shown):
                piece, shown = text[len(shown) :], text
                if piece:
                    yield piece

    def release(self) -> None:
        """Free the GPU buffers now."""
        self._readback.destroy()
        if self._logits_readback is not None:
            self._logits_readback.destroy()
        self.session.release()

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def load_tokenizer(tokenizer: str | os.PathLike | Any) -> Any:
    """A ``tokenizers.Tokenizer``: the one given, or read from a tokenizer.json path."""
    if not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise InputError("a tokenizer needs the tokenizers package: pip install 'onnx2wgsl[text]'") from None
    if not os.path.isfile(tokenizer):
        raise InputError(f"tokenizer file not found: {str(tokenizer)!r}")
    try:
        return Tokenizer.from_file(str(tokenizer))
    except Exception as e:  # the tokenizers package raises its own exception types
        raise InputError(f"{str(tokenizer)!r} is not a tokenizer.json ({first_line(e, 200)})") from e


def uniforms(seed: int | None) -> Iterator[float]:
    """The uniform draws in [0, 1) that sampling takes, one per step, from numpy's generator
    at ``seed`` (rounded to f32 below 1)."""
    rng = np.random.default_rng(seed)
    below_one = float(np.nextafter(np.float32(1), np.float32(0)))
    while True:
        yield min(float(np.float32(rng.random())), below_one)
