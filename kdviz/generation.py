"""On-policy vs off-policy (issue 19): each prompt is continued once by the student (on-policy, what GKD and MiniLLM
train on) and once by the teacher (off-policy), through Hugging Face ``generate``, and every continuation is scored
by both models, token by token. Nothing is stored; `compare_generations` returns one `PromptGenerations` per
prompt (and per sample, with ``n`` > 1). Both models share one tokenizer here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from kdviz.adapters.probe import ModelProbe, logit_probes
from kdviz.capture import resolve_device
from kdviz.errors import InputError
from kdviz.metrics import generation as gm
from kdviz.metrics.vocabulary import token_statistics

STATS = ("kl", "reverse_kl", "teacher_entropy", "student_entropy", "teacher_true_logprob", "student_true_logprob")


@dataclass(frozen=True)
class Continuation:
    """One model's continuation of a prompt (``writer``: "student" on-policy, "teacher" off-policy): its new token
    ids [G] and text, and at each new token, both models' view of it given the prompt and the tokens before it
    (`STATS`, float64 [G]: KL(p_t‖p_s), KL(p_s‖p_t), both entropies, both log-probabilities of the chosen token)."""

    writer: str
    ids: np.ndarray
    text: str
    stats: dict[str, np.ndarray]

    @property
    def repetition(self) -> float:
        """The share of its 4-grams that repeat an earlier one (`metrics.generation.repeated_ngram_rate`)."""
        return gm.repeated_ngram_rate(self.ids.tolist())


@dataclass(frozen=True)
class PromptGenerations:
    """A prompt (its text and ids [P]) with the student's and the teacher's continuation, where they fork (the first
    new position whose tokens differ; None when identical), and the length ratio (student ÷ teacher)."""

    prompt: str
    prompt_ids: np.ndarray
    on_policy: Continuation
    off_policy: Continuation
    fork: int | None = field(default=None)

    @property
    def length_ratio(self) -> float:
        teacher = len(self.off_policy.ids)
        return len(self.on_policy.ids) / teacher if teacher else float("nan")


def _score(probes: dict[str, ModelProbe], prompt: torch.Tensor, new: torch.Tensor) -> dict[str, np.ndarray]:
    """Both models' statistics at each new token [G]: one forward pass of each over prompt + new tokens; the logits
    at positions P − 1 … P + G − 2 predict the new tokens."""
    sequence = torch.cat([prompt, new])[None]
    device = probes["teacher"].device
    logits = {}
    for role, probe in probes.items():
        z = probe.forward({"input_ids": sequence.to(device), "attention_mask": torch.ones_like(sequence).to(device)}).logits
        logits[role] = z[:, len(prompt) - 1:-1].float()
    stats = token_statistics(logits["teacher"], logits["student"], new[None].to(device), topk=1)
    return {name: stats[name][0].double().cpu().numpy() for name in STATS}


def _generate(model: nn.Module, prompt: torch.Tensor, settings: dict[str, Any], seed: int, eos: int | None) -> torch.Tensor:
    """The new token ids [G] of one continuation, cut after the first end-of-sequence token."""
    torch.manual_seed(seed)
    ids = prompt[None].to(next(model.parameters()).device)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **settings)
    new = out[0, len(prompt):].cpu()
    if eos is not None and (new == eos).any():
        new = new[: int(torch.nonzero(new == eos)[0, 0]) + 1]
    return new


def compare_generations(
    teacher: nn.Module,
    student: nn.Module,
    prompts: Sequence[str],
    *,
    tokenizer: Any,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    n: int = 1,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> list[PromptGenerations]:
    """Continue each prompt with the student and with the teacher (``n`` times each with sampling, seeds
    ``seed`` … ``seed + n − 1``; greedy by default), and score every continuation by both models.

    Hugging Face causal LMs (``generate``); one shared ``tokenizer``. With ``do_sample=False`` a model's continuation
    is its greedy one, and ``fork`` is where the two greedy paths part.
    """
    if isinstance(prompts, str) or not all(isinstance(p, str) and p for p in prompts):
        raise InputError("prompts must be a list of non-empty strings")
    for role, model in (("teacher", teacher), ("student", student)):
        if not hasattr(model, "generate"):
            raise InputError(f"the {role} has no generate(); pass Hugging Face causal LMs (…ForCausalLM)")
    if max_new_tokens < 1 or n < 1:
        raise InputError(f"max_new_tokens and n must be at least 1, got {max_new_tokens} and {n}")
    if do_sample and (temperature <= 0 or not 0 < top_p <= 1):
        raise InputError(f"sampling needs temperature > 0 and 0 < top_p ≤ 1, got {temperature} and {top_p}")
    eos = getattr(tokenizer, "eos_token_id", None)
    pad = getattr(tokenizer, "pad_token_id", None)
    settings: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample,
                                "pad_token_id": pad if pad is not None else (eos if eos is not None else 0)}
    if do_sample:
        settings.update(temperature=temperature, top_p=top_p)
    else:  # greedy: silence the sampling settings a model's generation config may carry
        settings.update(temperature=None, top_p=None, top_k=None)
    target = resolve_device(device)
    probes = logit_probes(teacher, student, target)
    out = []
    with probes["teacher"], probes["student"], torch.inference_mode():
        for prompt in tqdm(prompts, desc="kdviz generate", unit="prompt", disable=not progress):
            prompt_ids = torch.tensor(tokenizer(prompt)["input_ids"], dtype=torch.long)
            if len(prompt_ids) == 0:
                raise InputError(f"the tokenizer gives no tokens for the prompt {prompt[:40]!r}")
            for probe in probes.values():
                probe.check_token_ids({"input_ids": prompt_ids[None]})
                positions = probe.family.position_rows(probe.model)
                if positions is not None and len(prompt_ids) + max_new_tokens > positions:
                    raise InputError(f"the {probe.role} reads at most {positions} positions, and the prompt "
                                     f"{prompt[:40]!r} has {len(prompt_ids)} tokens; keep prompt + max_new_tokens "
                                     f"within {positions} (max_new_tokens ≤ {positions - len(prompt_ids)})")
            for draw in range(n):
                continuations = {}
                for writer in ("student", "teacher"):
                    new = _generate(probes[writer].model, prompt_ids, settings, seed + draw, eos)
                    stats = _score(probes, prompt_ids, new) if len(new) else {name: np.zeros(0) for name in STATS}
                    continuations[writer] = Continuation(writer, new.numpy(), tokenizer.decode(new), stats)
                out.append(PromptGenerations(prompt, prompt_ids.numpy(), continuations["student"],
                                             continuations["teacher"],
                                             gm.fork_position(continuations["student"].ids.tolist(),
                                                              continuations["teacher"].ids.tolist())))
    return out
