"""The names of a run's arrays (schema 3), in one place: capture writes under them and `kdviz.store` reads them.
Nothing else spells a key out; readers use `Run`'s and `ModelSide`'s accessors.

``inputs/…`` hold what went in, ``{teacher,student}/…`` what each model gave, ``pair/…`` what was measured between
them, ``attribution/<target>/<method>/…`` the stored attributions, ``history/<step>/…`` a distillation's snapshots
and ``cache/<name>/…`` derived results (CKA).
"""

from __future__ import annotations

LABELS = "inputs/labels"  # [N] class indices, or [N, T] next-token ids with −100 where unlabelled
TOKEN_IDS = "inputs/token_ids"  # [N, T] int32
ATTENTION_MASK = "inputs/attention_mask"  # [N, T] uint8, 1 on real tokens
THUMBNAILS = "inputs/thumbnails"  # [N, h, w] or [N, h, w, 3] uint8 previews of image inputs
ATTRIBUTION = "attribution"
CACHE = "cache"
HISTORY = "history"
SNAPSHOT_PREFIXES = ("student/", "pair/")  # what a training snapshot records; the teacher and the inputs do not change


def logits(role: str) -> str:
    """[N, C] logits (or the [K, T, V] kept with keep_full_logits) of ``role``."""
    return f"{role}/logits"


def attention(role: str, index: int) -> str:
    """[K, H, T, T] exact attention probabilities of ``role``'s captured layer ``index``, for the K samples listed in
    ``meta.capture.attention_samples``."""
    return f"{role}/attn/{index}"


def attention_prefixes() -> tuple[str, ...]:
    """The key prefixes of the exact attention maps of both models (kept for some samples only)."""
    return ("teacher/attn/", "student/attn/")


def logit_keys() -> tuple[str, ...]:
    """The keys of both models' logits (a language model's: kept for some samples only)."""
    return (logits("teacher"), logits("student"))


def attention_summaries(role: str, index: int) -> str:
    """[N, H, S] float32 per-head summaries of one layer on every sample (S: `metrics.attention_digest.SUMMARY_NAMES`)."""
    return f"{role}/attn_summary/{index}"


def attention_thumbnails(role: str, index: int) -> str:
    """[N, H, P, P] float16 attention of one layer on every sample, pooled over its real tokens into ≤ P bins a side."""
    return f"{role}/attn_thumb/{index}"


ATTENTION_LAYER_DIVERGENCE = "pair/attn_layers"  # [N, L_t, L_s] float32 KL of head-averaged attention, per sample


def attention_head_divergence(teacher_layer: int, student_layer: int) -> str:
    """[N, H_t, H_s] float32 KL between every teacher head and student head of one mapped layer pair, per sample."""
    return f"pair/attn_heads/{teacher_layer}-{student_layer}"


def features(role: str, name: str) -> str:
    """[N, ...] output of ``role``'s hooked module ``name``; token outputs [N, T, D] are stored as their mean over the
    real tokens [N, D] unless captured with ``token_features="tokens"``."""
    return f"{role}/feat/{name}"


def summary_features(role: str, name: str) -> str:
    """[N, D] the summary token's output of ``role``'s hooked module ``name`` (first token, or a causal LM's last),
    kept beside the token mean when token features are pooled while capturing."""
    return f"{role}/feat_summary/{name}"


def feature_name(key: str, role: str) -> str | None:
    """The module name of a `features` key of ``role``, or None for any other key."""
    prefix = f"{role}/feat/"
    return key[len(prefix):] if key.startswith(prefix) else None


def spatial(role: str, name: str) -> str:
    """[N, h, w] attention-transfer map of ``role``'s conv feature ``name``."""
    return f"{role}/spatial/{name}"


def token_stat(role: str, stat: str) -> str:
    """[N, T, …] per-token statistic of ``role`` (entropy, true_prob, topk_ids, topk_probs)."""
    return f"{role}/tokens/{stat}"


def pair_token_stat(stat: str) -> str:
    """[N, T] per-token divergence between the models (kl, reverse_kl) at T = 1."""
    return f"pair/tokens/{stat}"


def attribution(target: str) -> str:
    """The group of the attributions that explain ``target``."""
    return f"{ATTRIBUTION}/{target}"


def cache(name: str) -> str:
    return f"{CACHE}/{name}"


def snapshot(step: int) -> str:
    """``history/00000120``, the group of the training snapshot at ``step``: zero-padded, so groups list in step order."""
    return f"{HISTORY}/{int(step):08d}"


TEXT = "text"  # what a run made from texts (`kdviz.capture_text`) keeps of them
TEXT_BYTES = "text/texts/utf8"  # [total] uint8: the texts, UTF-8, one after the other
TEXT_STARTS = "text/texts/start"  # [N + 1] int64: where each text starts in TEXT_BYTES


def alignment(name: str) -> str:
    """``text/alignment/<name>``: a role's character offsets [N, P, 2] (``teacher_offsets``), and in a two-tokenizer
    run the shared boundaries [N, S] (``boundaries``), the last piece of each span [N, S] (``teacher_piece``) and
    each span's log-probability [N, S] (``teacher_span_logprob``); −1 or NaN past a text's end."""
    return f"text/alignment/{name}"


GENERATION = "generation"  # what a run of generated text (`kdviz.generate`) keeps of its continuations
GENERATION_SAMPLES = "generation/continuations"  # its arrays, and in its attributes the unit and the settings


def generation(name: str) -> str:
    """``generation/continuations/<name>``, per sample of a generation run (sample 2·(prompt·n + draw) is the student's
    continuation, the next the teacher's): ``prompt``, ``draw``, ``writer`` (0 student, 1 teacher) [N] int32; the
    writer's token ids of prompt and continuation ``sequence`` [N, L] int32 (−1 past its end) with ``prompt_tokens``
    [N]; ``prompt_chars`` [N], where the continuation starts in the sample's text; ``start`` [N], the row of the
    sample's per-token statistics that predicts its first new unit, ``units`` [N] how many new units follow, and
    ``fork`` [N] the first of them where the two continuations part (−1: nowhere)."""
    return f"{GENERATION_SAMPLES}/{name}"
