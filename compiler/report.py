"""The compile report: what a compile produced, in figures a user can check."""

from __future__ import annotations

from dataclasses import dataclass, field


def _mib(n: int) -> str:
    return f"{n / 2**20:,.2f} MiB" if n >= 2**20 else f"{n / 1024:,.1f} KiB"


@dataclass
class CompileReport:
    model: str
    onnx_nodes: int
    ops: int
    kernels: int
    dispatches: int
    in_place: int
    shaders: int
    weight_bytes: int
    weight_file_bytes: int
    arena_bytes: int
    naive_bytes: int
    lower_bound: int
    strategy: str
    target: str
    output: str | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # dims kept symbolic: name -> [lo, hi]; memory is planned at every dim's hi
    dims: dict[str, list[int]] = field(default_factory=dict)

    def summary(self) -> str:
        ratio = self.arena_bytes / self.naive_bytes if self.naive_bytes else 0.0
        lines = [
            f"compiled {self.model} for {self.target} in {self.seconds:.2f}s"
            + (f" -> {self.output}" if self.output else ""),
            f"  onnx nodes      {self.onnx_nodes:>10}",
            f"  graph ops       {self.ops:>10}  (after folding and passes)",
            f"  kernels         {self.kernels:>10}",
            f"  dispatches      {self.dispatches:>10}",
            f"  in place        {self.in_place:>10}  (kernels writing over an input that dies there)",
            f"  unique shaders  {self.shaders:>10}",
            *(
                [
                    f"  dims            {', '.join(f'{k}={lo}..{hi}' for k, (lo, hi) in self.dims.items())}"
                    f"  (chosen per run; memory planned at {', '.join(f'{k}={hi}' for k, (_, hi) in self.dims.items())})"
                ]
                if self.dims
                else []
            ),  # fmt: skip
            f"  weight bytes    {self.weight_bytes:>14,}  ({_mib(self.weight_bytes)}; {self.weight_file_bytes:,} in weights.bin)",
            f"  arena bytes     {self.arena_bytes:>14,}  ({_mib(self.arena_bytes)}; {ratio:.1%} of naive, plan: {self.strategy})",
            f"  naive bytes     {self.naive_bytes:>14,}  (every intermediate in its own buffer)",
            f"  lower bound     {self.lower_bound:>14,}  (most bytes live at one step)",
        ]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return dict(self.__dict__)
