"""On-policy vs off-policy (issue 19): each prompt is continued once by the student (on-policy, what GKD and MiniLLM
train on) and once by the teacher (off-policy), through Hugging Face ``generate``, and every continuation is scored
by both models, token by token, into a run.

`generate` writes the run: its samples are the continuations (prompt + new text), two per prompt and draw, scored
as any language-model run (`kdviz.capture` on the exact generated ids with one tokenizer; `kdviz.capture_text`'s
spans with two), plus what was generated under ``generation/`` (`layout.generation`). The Tokens page reads it;
`compare_generations` returns the same continuations as `metrics.generation.PromptGenerations` in memory."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from kdviz import layout
from kdviz.adapters.probe import ModelProbe, logit_probes
from kdviz.capture import capture, new_run_path, resolve_device
from kdviz.errors import InputError
from kdviz.metrics.generation import WRITERS, PromptGenerations, fork_position
from kdviz.readers.generation import GenerationData
from kdviz.store import GroupWriter, Run, refuse_existing
from kdviz.text_capture import add_texts, capture_text, pad_rows

DECODE_CONTEXT = 8  # tokens decoded before each one to find its characters (a character's bytes span ≤ 4 tokens)


@dataclass
class Written:
    """One continuation as generated: the writer's ids of prompt + continuation [L], how many are the prompt's,
    and the sample's text with where its continuation starts."""

    prompt: int
    draw: int
    writer: str
    sequence: torch.Tensor
    prompt_tokens: int
    text: str
    prompt_chars: int


def _generate(model: nn.Module, prompt: torch.Tensor, settings: dict[str, Any], seed: int, eos: int | None) -> torch.Tensor:
    """The new token ids [G] of one continuation, cut after the first end-of-sequence token."""
    torch.manual_seed(seed)
    ids = prompt[None].to(next(model.parameters()).device)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **settings)
    new = out[0, len(prompt):].cpu()
    if eos is not None and (new == eos).any():
        new = new[: int(torch.nonzero(new == eos)[0, 0]) + 1]
    return new


def token_offsets(tokenizer: Any, ids: Sequence[int]) -> np.ndarray:
    """Each token's characters [T, 2] in the text ``ids`` decode to: what decoding it after the few tokens before it
    adds, so leading-space markers and the byte pieces of one character come out right (the last piece of a
    character gets it). A decoder whose pieces do not add up to the text falls back to decoding every prefix."""
    ids = [int(i) for i in ids]
    length = len(tokenizer.decode(ids))
    pieces = []
    for i in range(len(ids)):
        before = ids[max(0, i - DECODE_CONTEXT):i]
        pieces.append(len(tokenizer.decode([*before, ids[i]])) - len(tokenizer.decode(before)))
    ends = np.cumsum(pieces, dtype=np.int64)
    if len(ids) and (ends[-1] != length or min(pieces) < 0):
        ends = _prefix_ends(tokenizer, ids, length)
    return np.stack([np.r_[0, ends[:-1]], ends], axis=1).astype(np.int64) if len(ids) else np.zeros((0, 2), np.int64)


def _prefix_ends(tokenizer: Any, ids: list[int], length: int) -> np.ndarray:
    """Where each token's text ends [T], from decoding every prefix: a prefix that ends inside a character (its bytes
    not all there yet: a trailing "\ufffd") ends where the next complete prefix does."""
    ends = np.empty(len(ids), dtype=np.int64)
    end = length
    for i in range(len(ids) - 1, -1, -1):
        prefix = tokenizer.decode(ids[:i + 1])
        if not prefix.endswith("\ufffd"):
            end = min(len(prefix), end)
        ends[i] = end
    return ends


def _settings(tokenizer: Any, max_new_tokens: int, do_sample: bool, temperature: float, top_p: float) -> dict[str, Any]:
    """Hugging Face ``generate`` settings for one writer's tokenizer (its end and padding ids)."""
    eos = getattr(tokenizer, "eos_token_id", None)
    pad = getattr(tokenizer, "pad_token_id", None)
    settings: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample,
                                "pad_token_id": pad if pad is not None else (eos if eos is not None else 0)}
    if do_sample:
        settings.update(temperature=temperature, top_p=top_p)
    else:  # greedy: silence the sampling settings a model's generation config may carry
        settings.update(temperature=None, top_p=None, top_k=None)
    return settings


def _prompt_ids(probes: dict[str, ModelProbe], tokenizers: dict[str, Any], prompt: str, max_new_tokens: int) -> dict[str, torch.Tensor]:
    """Each model's ids of one prompt [P], checked against its embedding and position table."""
    out = {}
    for role, probe in probes.items():
        ids = torch.tensor(tokenizers[role](prompt)["input_ids"], dtype=torch.long)
        if len(ids) == 0:
            raise InputError(f"the {role}'s tokenizer gives no tokens for the prompt {prompt[:40]!r}")
        probe.check_token_ids({"input_ids": ids[None]})
        positions = probe.family.position_rows(probe.model)
        if positions is not None and len(ids) + max_new_tokens > positions:
            raise InputError(f"the {role} reads at most {positions} positions, and the prompt {prompt[:40]!r} has "
                             f"{len(ids)} tokens; keep prompt + max_new_tokens within {positions} "
                             f"(max_new_tokens ≤ {positions - len(ids)})")
        out[role] = ids
    return out


def _check(teacher: nn.Module, student: nn.Module, prompts: Sequence[str], max_new_tokens: int, n: int,
           do_sample: bool, temperature: float, top_p: float) -> list[str]:
    if isinstance(prompts, str) or not all(isinstance(p, str) and p for p in prompts) or not len(prompts):
        raise InputError("prompts must be a non-empty list of non-empty strings")
    for role, model in (("teacher", teacher), ("student", student)):
        if not hasattr(model, "generate"):
            raise InputError(f"the {role} has no generate(); pass Hugging Face causal LMs (…ForCausalLM)")
    if max_new_tokens < 1 or n < 1:
        raise InputError(f"max_new_tokens and n must be at least 1, got {max_new_tokens} and {n}")
    if do_sample and (temperature <= 0 or not 0 < top_p <= 1):
        raise InputError(f"sampling needs temperature > 0 and 0 < top_p ≤ 1, got {temperature} and {top_p}")
    return list(prompts)


def generate(
    teacher: nn.Module,
    student: nn.Module,
    prompts: Sequence[str],
    *,
    tokenizer: Any,
    student_tokenizer: Any = None,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    n: int = 1,
    path: str | os.PathLike | None = None,
    overwrite: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    **options: Any,
) -> Run:
    """Continue each prompt with the student and with the teacher (``n`` times each with sampling, seeds
    ``seed`` … ``seed + n − 1``; greedy by default), score every continuation by both models, and store it all in a
    run (``path``, default a new temporary directory), which is returned opened.

    - One ``tokenizer`` (``student_tokenizer=None``): each continuation is scored on the exact ids generated, by
      `kdviz.capture` (``options``: its settings, such as ``topk``, ``batch_size``, ``attentions``): per token both
      KL directions, both entropies, top-k and the chosen token's probability.
    - Two tokenizers: each model generates from its own tokenization of the prompt, and the texts (prompt + decoded
      continuation) are scored as `kdviz.capture_text` scores them, on the spans both tokenizations share.

    Hugging Face causal LMs (``generate``). With ``do_sample=False`` a continuation is the model's greedy one, and
    the fork is where the two greedy paths part.
    """
    prompts = _check(teacher, student, prompts, max_new_tokens, n, do_sample, temperature, top_p)
    two = student_tokenizer is not None and student_tokenizer is not tokenizer
    tokenizers = {"teacher": tokenizer, "student": student_tokenizer if two else tokenizer}
    if two:
        unsupported = sorted(set(options) - {"batch_size", "names", "extra_meta", "topk"})
        if unsupported:
            raise InputError(f"with two tokenizers the continuations are scored on shared spans, so {unsupported} do "
                             "not apply; use one tokenizer for attention and features")
    final = path if path is not None else new_run_path()
    refuse_existing(final, overwrite)  # before generating, not after
    settings = {role: _settings(tokenizers[role], max_new_tokens, do_sample, temperature, top_p) for role in WRITERS}
    target = resolve_device(device)
    probes = logit_probes(teacher, student, target)
    written = []
    with probes["teacher"], probes["student"], torch.inference_mode():
        for index, prompt in enumerate(tqdm(prompts, desc="kdviz generate", unit="prompt", disable=not progress)):
            ids = _prompt_ids(probes, tokenizers, prompt, max_new_tokens)
            for draw in range(n):
                for writer in WRITERS:
                    eos = getattr(tokenizers[writer], "eos_token_id", None)
                    new = _generate(probes[writer].model, ids[writer], settings[writer], seed + draw, eos)
                    written.append(_written(index, draw, writer, prompt, ids[writer], new, tokenizers[writer], two))
    texts = [w.text for w in written]
    if two:
        run = capture_text(teacher, student, texts, tokenizer=tokenizer, student_tokenizer=student_tokenizer,
                           max_length=None, path=final, overwrite=overwrite, device=device, progress=progress, **options)
    else:
        # a causal LM's target at each token is the next one: the chosen token's probability at every new token
        samples = [{"input_ids": w.sequence, "attention_mask": torch.ones_like(w.sequence)} for w in written]
        run = capture(teacher, student, samples, tokenizer=tokenizer, path=final, overwrite=overwrite, device=device,
                      progress=progress, **options)
        if not isinstance(run, Run):
            return run  # dry_run: the estimate
        run = add_texts(run, texts, [token_offsets(tokenizer, w.sequence.tolist()) for w in written])
    _add_generation(run, written, "span" if two else "token", {
        "max_new_tokens": max_new_tokens, "do_sample": do_sample, "temperature": temperature if do_sample else None,
        "top_p": top_p if do_sample else None, "seed": seed, "n": n, "prompts": len(prompts)})
    return Run.open(run.path)


def _written(index: int, draw: int, writer: str, prompt: str, prompt_ids: torch.Tensor, new: torch.Tensor,
             tokenizer: Any, two: bool) -> Written:
    sequence = torch.cat([prompt_ids, new])
    if not two:  # the sample's text is what its ids decode to, so each token's characters are known
        return Written(index, draw, writer, sequence, len(prompt_ids), tokenizer.decode(sequence.tolist()),
                       len(tokenizer.decode(prompt_ids.tolist())))
    # two tokenizers: the other model reads the text, so it is the prompt as given and the continuation's characters
    full, before = _text_of(tokenizer, sequence), _text_of(tokenizer, prompt_ids)
    continuation = full[len(before):] if full.startswith(before) else _text_of(tokenizer, new)
    return Written(index, draw, writer, sequence, len(prompt_ids), prompt + continuation, len(prompt))


def _text_of(tokenizer: Any, ids: torch.Tensor) -> str:
    """The text ids stand for, without the control tokens (begin, end, padding, separators), which are not text;
    other added tokens (byte pieces registered as special, say) are kept."""
    control = {getattr(tokenizer, f"{name}_token_id", None) for name in ("bos", "eos", "pad", "cls", "sep", "mask")}
    return tokenizer.decode([i for i in ids.tolist() if i not in control])


def _add_generation(run: Run, written: list[Written], unit: str, settings: dict[str, Any]) -> None:
    """Write ``generation/`` into the run: who wrote each sample, its ids, and where its new units start and fork."""
    starts, units, forks = [], [], []
    # each sample's span ends, read once (−1 pads past a text's last span)
    boundaries = [row[row >= 0] for row in run.text_alignment("boundaries")[:]] if unit == "span" else None
    for i, w in enumerate(written):
        if boundaries is None:  # row P − 1 predicts the first new token
            starts.append(w.prompt_tokens - 1)
            units.append(len(w.sequence) - w.prompt_tokens)
        else:  # the spans that end after the prompt; the row before the first predicts it
            ends = boundaries[i]
            first = int(np.searchsorted(ends, w.prompt_chars, side="right"))
            starts.append(max(first - 1, 0))
            units.append(max(len(ends) - starts[-1] - 1, 0))
    for i in range(0, len(written), 2):  # each student continuation, then the teacher's of the same prompt and draw
        pair = written[i:i + 2]
        if unit == "token":
            fork = fork_position(*(w.sequence[w.prompt_tokens:].tolist() for w in pair))
            forks += [-1 if fork is None else fork] * 2
            continue
        character = fork_position(*(w.text[w.prompt_chars:] for w in pair))
        for j, w in enumerate(pair):
            if character is None:
                forks.append(-1)
                continue
            ends = boundaries[i + j][starts[i + j] + 1:]
            forks.append(min(int(np.searchsorted(ends, w.prompt_chars + character, side="right")), max(units[i + j] - 1, 0)))
    sequence = pad_rows([w.sequence.numpy() for w in written], max(len(w.sequence) for w in written), -1, np.int32)
    arrays = {
        "prompt": [w.prompt for w in written], "draw": [w.draw for w in written],
        "writer": [WRITERS.index(w.writer) for w in written], "prompt_tokens": [w.prompt_tokens for w in written],
        "prompt_chars": [w.prompt_chars for w in written], "start": starts, "units": units, "fork": forks,
    }
    group = layout.GENERATION_SAMPLES.removeprefix(f"{layout.GENERATION}/")
    with GroupWriter(run.path, layout.GENERATION) as writer:  # keys relative to generation/
        for name, values in arrays.items():
            writer.append(f"{group}/{name}", np.asarray(values, dtype=np.int32))
        writer.append(f"{group}/sequence", sequence)
        writer.commit({group: {"unit": unit, "settings": settings}})


def compare_generations(teacher: nn.Module, student: nn.Module, prompts: Sequence[str], *, tokenizer: Any,
                        **settings: Any) -> list[PromptGenerations]:
    """`generate` into a temporary run, read back as one `metrics.generation.PromptGenerations` per prompt and draw
    (the arguments are `generate`'s)."""
    return GenerationData.from_run(generate(teacher, student, prompts, tokenizer=tokenizer, **settings)).generations()
