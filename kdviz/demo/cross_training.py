"""Reproducible training of the cross-tokenizer demo pair (issue 19): a teacher and a student language model with
different tokenizers, each trained by the `tokenizers` library on the charlm demo's text; the teacher learns by
next-piece cross-entropy, the student by its own cross-entropy plus ULD (`kdviz.losses.ULD`, Boizard et al. 2024)
against the teacher at the characters where both tokenizations end a piece (`metrics.token_alignment.align`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kdviz.demo import data as demo_data
from kdviz.demo.fitting import fit
from kdviz.demo.models import build
from kdviz.demo.tokenizers import train_tokenizer
from kdviz.losses import ULD, StepOutputs
from kdviz.metrics import token_alignment as ta


class Tokenized:
    """A text tokenized once: ids [P], each piece's start and end character [P], as numpy."""

    def __init__(self, tokenizer: Any, text: str) -> None:
        encoding = tokenizer.encode(text)
        self.ids = np.asarray(encoding.ids, dtype=np.int64)
        offsets = np.asarray(encoding.offsets, dtype=np.int64).reshape(-1, 2)
        self.starts, self.ends = offsets[:, 0], offsets[:, 1]


def _pad(rows: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged id rows as [B, L] ids (padded with 0) and their [B, L] attention mask."""
    length = max(len(r) for r in rows)
    ids, mask = torch.zeros(len(rows), length, dtype=torch.long), torch.zeros(len(rows), length, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = torch.from_numpy(row), 1
    return ids, mask


class AlignedWindows:
    """Random windows of the corpus as both tokenizations see them: a window of the student's pieces, the teacher's
    pieces inside the same characters, and the rows of both at the shared boundaries inside the window."""

    def __init__(self, teacher: Tokenized, student: Tokenized, length: int) -> None:
        self.teacher, self.student, self.length = teacher, student, length
        alignment = ta.align(teacher.ends, student.ends)
        self.teacher_piece, self.student_piece = alignment.teacher_piece, alignment.student_piece

    def batch(self, starts: list[int]) -> dict[str, torch.Tensor]:
        """For student windows starting at piece ``starts``: ids and masks of both, and the (sample, teacher row,
        student row) of every shared boundary inside."""
        t_rows, s_rows, where = [], [], []
        for b, j in enumerate(starts):
            stop = j + self.length
            first_char, last_char = self.student.starts[j], self.student.ends[stop - 1]
            i0 = int(np.searchsorted(self.teacher.starts, first_char, side="left"))
            i1 = int(np.searchsorted(self.teacher.ends, last_char, side="right"))  # teacher pieces i0 … i1 − 1
            s_rows.append(self.student.ids[j:stop])
            t_rows.append(self.teacher.ids[i0:i1])
            lo, hi = np.searchsorted(self.student_piece, j), np.searchsorted(self.student_piece, stop)
            for tp, sp in zip(self.teacher_piece[lo:hi], self.student_piece[lo:hi], strict=True):
                if i0 <= tp < i1:
                    where.append((b, tp - i0, sp - j))
        (t_ids, t_mask), (s_ids, s_mask) = _pad(t_rows), _pad(s_rows)
        return {"teacher_ids": t_ids, "teacher_mask": t_mask, "student_ids": s_ids, "student_mask": s_mask,
                "boundaries": torch.tensor(where, dtype=torch.long).reshape(-1, 3)}


def train_cross_tokenizer_pair(settings: dict[str, Any], seed: int, fast: bool = False,
                               progress: bool = True) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """(teacher, student, {role: `tokenizers.Tokenizer`}) trained from ``seed`` on the training part of the corpus."""
    train_text, _ = demo_data.split_corpus(demo_data.corpus_text())
    tokenizers = {role: train_tokenizer(train_text, **settings["tokenizers"][role]) for role in ("teacher", "student")}
    pieces = {role: Tokenized(tokenizer, train_text) for role, tokenizer in tokenizers.items()}
    train = settings["train"]
    steps, batch, length = (5 if fast else train["steps"]), train["batch_size"], train["window"]
    models = {role: build("char_lm", {**settings[role]["kwargs"], "vocab_size": tokenizers[role].get_vocab_size()})
              for role in ("teacher", "student")}
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    teacher, student = models["teacher"], models["student"]

    def teacher_step(_: int) -> torch.Tensor:
        starts = torch.randint(0, len(pieces["teacher"].ids) - length - 1, (batch,), generator=generator).tolist()
        chunk = torch.from_numpy(np.stack([pieces["teacher"].ids[s:s + length + 1] for s in starts]))
        logits = teacher(chunk[:, :-1]).logits
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1))

    fit(teacher, ((step,) for step in range(steps)), steps, train["lr"], teacher_step, "cross-tokenizer teacher", progress)
    windows = AlignedWindows(pieces["teacher"], pieces["student"], length + 1)
    uld, alpha = ULD(T=1.0), train["alpha"]
    student_generator = torch.Generator().manual_seed(seed + 1)

    def student_step(_: int) -> torch.Tensor:
        starts = torch.randint(0, len(pieces["student"].ids) - length - 2, (batch,), generator=student_generator).tolist()
        b = windows.batch(starts)
        z_s = student(b["student_ids"], attention_mask=b["student_mask"]).logits
        ce = F.cross_entropy(z_s[:, :-1].reshape(-1, z_s.shape[-1]), b["student_ids"][:, 1:].reshape(-1))
        with torch.no_grad():
            z_t = teacher(b["teacher_ids"], attention_mask=b["teacher_mask"]).logits
        sample, t_row, s_row = b["boundaries"].unbind(1)
        aligned = uld(StepOutputs(z_t[sample, t_row], z_s[sample, s_row]))["uld"]
        return alpha * ce + (1 - alpha) * aligned

    fit(student, ((step,) for step in range(steps)), steps, train["lr"], student_step,
        "cross-tokenizer student (CE + ULD)", progress)
    return teacher, student, tokenizers


def held_out_lines(n: int, length: int) -> list[str]:
    """``n`` lines of prose from the held-out text, cut at ``length`` characters (the text's tables left out)."""
    _, held_out = demo_data.split_corpus(demo_data.corpus_text())
    lines = [line.strip() for line in held_out.splitlines() if sum(c.isalpha() for c in line) > 40]
    return [line[:length] for line in lines[:n]]

