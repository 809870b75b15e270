"""The logit lens of a teacher and a student (issue 19): each causal LM's hidden state after every block read out
through that model's own final norm and unembedding, and compared per token with its own final distribution and
with the teacher's. Nothing is stored; `logit_lens` returns a `LogitLens` for `kdviz.views.lens`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from kdviz.adapters.family import LensParts
from kdviz.adapters.probe import ModelProbe, logit_probes
from kdviz.capture import resolve_device
from kdviz.errors import InputError
from kdviz.metrics import logit_lens as ll
from kdviz.text import check_texts

LENS_ROWS = 256  # token rows read out at once: [256, V] logits per layer (156 MB at V = 152k)


@dataclass(frozen=True)
class ModelLens:
    """One model's lens over all tokens of all texts, row 0 the embeddings and row L its last block: the KL of its
    final distribution to the lens KL(p_final‖p_l), the KL of the teacher's final distribution to it
    KL(p_teacher‖p_l) and the lens's top-1 id, each [L + 1, M]."""

    role: str
    kl_to_own_final: np.ndarray
    kl_to_teacher_final: np.ndarray
    top1: np.ndarray

    @property
    def layers(self) -> int:
        return self.top1.shape[0] - 1

    @property
    def depth(self) -> np.ndarray:
        """Normalised depth of each row [L + 1]: 0 the embeddings, 1 the last block."""
        return np.linspace(0.0, 1.0, self.layers + 1)

    @property
    def commit_layer(self) -> np.ndarray:
        """Per token [M], the first layer from which the lens's top-1 stays the final one."""
        return ll.commit_layers(self.top1)

    @property
    def commit_depth(self) -> np.ndarray:
        return self.commit_layer / max(self.layers, 1)


@dataclass(frozen=True)
class LogitLens:
    """Both models' lens on the same tokens: ``text_of_token`` [M] says which text each token is in, ``pieces``
    each text's tokens."""

    teacher: ModelLens
    student: ModelLens
    texts: list[str]
    pieces: list[list[str]]
    text_of_token: np.ndarray


def _parts(probe: ModelProbe) -> LensParts:
    parts = probe.family.lens_parts(probe.model)
    if parts is None:
        raise InputError(f"the logit lens reads Hugging Face causal LMs (…ForCausalLM with a final norm), and the "
                         f"{probe.role} is a {type(probe.model).__name__}; pass causal LMs such as GPT-2, Llama, Qwen2 "
                         "or Mistral")
    return parts


def _block_states(probe: ModelProbe, parts: LensParts, inputs: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """([h_0 … h_L], each [T, D]: the first block's input and every block's output, final logits [T, V]) of one
    sequence."""
    states: list[torch.Tensor | None] = [None] * (len(parts.blocks) + 1)

    def keep_input(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        states[0] = (args[0] if args else kwargs["hidden_states"])[0].detach()

    def keep_output(index: int):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            states[index] = (output[0] if isinstance(output, tuple) else output)[0].detach()
        return hook

    handles = [parts.blocks[0].register_forward_pre_hook(keep_input, with_kwargs=True)]
    handles += [block.register_forward_hook(keep_output(i + 1)) for i, block in enumerate(parts.blocks)]
    try:
        logits = probe.forward(inputs).logits
    finally:
        for handle in handles:
            handle.remove()
    if any(state is None for state in states):
        raise InputError(f"the {probe.role}'s blocks were not all run by its forward pass; the logit lens needs a "
                         "model whose decoder blocks each run once per forward")
    return [s for s in states if s is not None], logits[0]


def _read_out(parts: LensParts, states: list[torch.Tensor], final: torch.Tensor, teacher_final: torch.Tensor,
              vocab: int) -> dict[str, np.ndarray]:
    """The lens statistics [L + 1, T] of one sequence, LENS_ROWS tokens at a time."""
    out: dict[str, list[list[torch.Tensor]]] = {}
    for h in states:
        rows: dict[str, list[torch.Tensor]] = {}
        for start in range(0, len(h), LENS_ROWS):
            stop = start + LENS_ROWS
            z = parts.head(parts.norm(h[start:stop][None]))[0]
            for name, value in ll.lens_rows(z, final[start:stop], teacher_final[start:stop], vocab).items():
                rows.setdefault(name, []).append(value)
        for name, values in rows.items():
            out.setdefault(name, []).append(torch.cat(values))
    return {name: torch.stack(values).cpu().numpy() for name, values in out.items()}


def logit_lens(
    teacher: nn.Module,
    student: nn.Module,
    texts: Sequence[str],
    *,
    tokenizer: Any,
    max_length: int | None = 512,
    vocab_size: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> LogitLens:
    """Read every block of both causal LMs through its own final norm and unembedding, on each text tokenized by the
    shared ``tokenizer`` (cut at ``max_length`` tokens), and compare the lens with the model's own final distribution
    and with the teacher's, over the first ``vocab_size`` ids (default: the tokenizer's length, so output layers
    padded past it compare over the real vocabulary). Memory: one text's hidden states per model and [256, V]
    logits at a time."""
    texts = check_texts(texts)
    vocab = int(vocab_size if vocab_size is not None else len(tokenizer))
    target = resolve_device(device)
    probes = logit_probes(teacher, student, target)
    stats: dict[str, dict[str, list[np.ndarray]]] = {"teacher": {}, "student": {}}
    pieces, text_of_token = [], []
    with probes["teacher"], probes["student"], torch.inference_mode():
        parts = {role: _parts(probe) for role, probe in probes.items()}
        for index, text in enumerate(tqdm(texts, desc="kdviz logit lens", unit="text", disable=not progress)):
            ids = tokenizer(text, truncation=max_length is not None, max_length=max_length)["input_ids"]
            if not ids:
                raise InputError(f"the tokenizer gives no tokens for the text {text[:40]!r}; pass non-empty texts")
            inputs = {"input_ids": torch.tensor([ids], dtype=torch.long)}
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])  # probe.forward checks the ids
            forward = {role: _block_states(probe, parts[role], {k: v.to(target) for k, v in inputs.items()})
                       for role, probe in probes.items()}
            for role, (_, final) in forward.items():
                if final.shape[-1] < vocab:
                    raise InputError(f"the {role} predicts {final.shape[-1]} ids but the vocabulary has {vocab}; pass "
                                     "vocab_size= the number of real ids both models predict")
            teacher_final = forward["teacher"][1]
            for role, (states, final) in forward.items():
                for name, value in _read_out(parts[role], states, final, teacher_final, vocab).items():
                    stats[role].setdefault(name, []).append(value)
            pieces.append([str(p) for p in tokenizer.convert_ids_to_tokens(ids)])
            text_of_token.append(np.full(len(ids), index))
    lenses = {role: ModelLens(role, np.concatenate(s["kl_own"], axis=1), np.concatenate(s["kl_teacher"], axis=1),
                              np.concatenate(s["top1"], axis=1)) for role, s in stats.items()}
    return LogitLens(lenses["teacher"], lenses["student"], texts, pieces, np.concatenate(text_of_token))
