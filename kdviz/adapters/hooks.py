"""Forward hooks that record module outputs, selected by dotted path or glob pattern."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

from kdviz.adapters.outputs import first_tensor
from kdviz.errors import CaptureError, InputError


def resolve_modules(model: nn.Module, patterns: Sequence[str], role: str) -> list[str]:
    """Module names matching ``patterns``, in model order.

    A pattern is an exact dotted path or a glob over the path: ``*`` matches within one dotted segment
    (``encoder.layer.*.output``), ``**`` matches across segments, ``?`` matches one character.
    """
    names = [name for name, _ in model.named_modules() if name]
    chosen: list[str] = []
    for pattern in patterns:
        regex = glob_to_regex(pattern)
        matches = [n for n in names if regex.fullmatch(n)]
        if not matches:
            close = [n for n in names if pattern.split(".")[0].rstrip("*") and n.startswith(pattern.split(".")[0].rstrip("*"))][:8]
            hint = close or names[:8]
            raise InputError(f"no {role} module matches {pattern!r}; module names look like {hint}")
        chosen.extend(n for n in matches if n not in chosen)
    order = {name: i for i, name in enumerate(names)}
    return sorted(chosen, key=order.__getitem__)


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a dotted-path glob: ``**`` any text, ``*`` any text without a dot, ``?`` one non-dot character."""
    parts = re.split(r"(\*\*|\*|\?)", pattern)
    table = {"**": ".*", "*": "[^.]*", "?": "[^.]"}
    return re.compile("".join(table.get(part, re.escape(part)) for part in parts))


class FeatureHooks:
    """Records the output of each chosen module on every call of a forward pass.

    A module called more than once per forward pass (a shared block, a recurrent cell) is stored once per call,
    as ``name@0``, ``name@1``…; the call pattern is fixed by the first batch, and a later batch that calls a
    module a different number of times raises instead of being silently mislabelled.
    """

    def __init__(self, model: nn.Module, names: Sequence[str], role: str, dtype: torch.dtype = torch.float32,
                 keep_graph: bool = False) -> None:
        self.role = role
        self.names = list(names)
        self.dtype = dtype
        self.keep_graph = keep_graph  # keep outputs in the autograd graph (training losses on features)
        self._calls: dict[str, list[torch.Tensor]] = {name: [] for name in self.names}
        self._pattern: dict[str, int] | None = None
        modules = dict(model.named_modules())
        self._handles = [modules[name].register_forward_hook(self._make_hook(name)) for name in self.names]

    def _make_hook(self, name: str):
        def hook(module: nn.Module, args, output) -> None:
            tensor = first_tensor(output)
            if tensor is None:
                raise CaptureError(
                    f"{self.role} module {name!r} returned no tensor ({type(output).__name__}); hook a module that outputs features"
                )
            self._calls[name].append(tensor if self.keep_graph else tensor.detach().to(self.dtype))

        return hook

    def collect(self) -> dict[str, torch.Tensor]:
        """The features of the forward pass just run, keyed by output name; resets for the next pass."""
        counts = {name: len(calls) for name, calls in self._calls.items()}
        if self._pattern is None:
            silent = [name for name, count in counts.items() if count == 0]
            if silent:
                raise CaptureError(f"{self.role} modules {silent} never ran during the forward pass; choose modules on the forward path")
            self._pattern = counts
        elif counts != self._pattern:
            changed = {n: (self._pattern[n], counts[n]) for n in counts if counts[n] != self._pattern[n]}
            raise CaptureError(
                f"{self.role} modules were called a different number of times than in the first batch "
                f"(first, now): {changed}; per-call features cannot be labelled consistently, hook modules that run once per forward"
            )
        out: dict[str, torch.Tensor] = {}
        for name, calls in self._calls.items():
            if len(calls) == 1:
                out[name] = calls[0]
            else:
                out.update({f"{name}@{i}": t for i, t in enumerate(calls)})
            self._calls[name] = []
        return out

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
