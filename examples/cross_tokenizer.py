"""Compare two causal LMs that tokenize text differently: align by character offsets, exact next-piece divergence at
shared boundaries, chain-rule span log-probabilities between them (kdviz.metrics.token_alignment; the formulas are
in docs/formulas.md).

Offline, the tokenizers are trained here on prose that ships with Python (a byte-level BPE of 300 pieces and a
sentencepiece-style BPE of 600), and the models are small GPT-2s from configs with random weights: the numbers
show the mechanics, not a distillation. With real models, use their own tokenizers:

    teacher_tok = AutoTokenizer.from_pretrained("Qwen/Qwen2.5-1.5B")        # byte-level BPE
    student_tok = AutoTokenizer.from_pretrained("mistralai/Mistral-7B-v0.1")  # sentencepiece
    encoding = teacher_tok(text, return_offsets_mapping=True)

Run:  python examples/cross_tokenizer.py
"""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from kdviz.demo.data import corpus_text
from kdviz.demo.tokenizers import train_byte_level, train_sentencepiece_like
from kdviz.metrics import token_alignment as ta


def pieces(tokenizer) -> list[str]:
    vocabulary = tokenizer.get_vocab()
    by_id = {i: piece for piece, i in vocabulary.items()}
    return [by_id.get(i) for i in range(tokenizer.get_vocab_size())]


def main() -> dict:
    torch.manual_seed(0)
    corpus = corpus_text(60_000)
    tokenizers = {"teacher": train_byte_level(corpus, 300), "student": train_sentencepiece_like(corpus, 600)}
    lms = {role: GPT2LMHeadModel(GPT2Config(vocab_size=tok.get_vocab_size(), n_layer=2, n_head=2, n_embd=64,
                                            n_positions=512, bos_token_id=0, eos_token_id=0)).eval()
           for role, tok in tokenizers.items()}
    text = corpus[1_000:1_400]
    encodings = {role: tok.encode(text) for role, tok in tokenizers.items()}
    alignment = ta.align(*[[end for _, end in encodings[role].offsets] for role in ("teacher", "student")])
    logits, logprobs = {}, {}
    with torch.inference_mode():
        for role, encoding in encodings.items():
            ids = torch.tensor(encoding.ids)
            logits[role] = lms[role](ids[None]).logits[0]
            logprobs[role] = ta.true_token_logprobs(logits[role], ids)
    match = ta.VocabularyMatch.from_pieces(pieces(tokenizers["teacher"]), pieces(tokenizers["student"]))
    at_boundaries = ta.matched_divergence(logits["teacher"][alignment.teacher_piece],
                                          logits["student"][alignment.student_piece], match)
    spans = ta.span_logprobs(alignment, logprobs["teacher"], logprobs["student"])
    print(f"{len(text)} characters: {len(encodings['teacher'].ids)} teacher pieces, "
          f"{len(encodings['student'].ids)} student pieces, {len(alignment.boundaries)} shared boundaries; "
          f"{match.n_shared} strings in both vocabularies")
    print(f"next-piece KL(p̂_t‖p̂_s) at shared boundaries: mean {at_boundaries['kl'].mean():.3f} nats; mass outside "
          f"the shared strings: teacher {at_boundaries['teacher_outside_mass'].mean():.3f}, "
          f"student {at_boundaries['student_outside_mass'].mean():.3f}")
    starts = [0, *alignment.boundaries[:-1].tolist()]
    worst = sorted(range(1, len(starts)), key=lambda k: -abs(spans["difference"][k]))[:5]
    for k in worst:
        print(f"  span {text[starts[k]:alignment.boundaries[k]]!r:16}  log p_t − log p_s = {spans['difference'][k]:+.2f}")
    return {"alignment": alignment, "boundaries": at_boundaries, "spans": spans}


if __name__ == "__main__":
    main()
