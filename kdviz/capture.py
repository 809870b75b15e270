"""`capture`: run the teacher and the student over data and store logits, attentions and features in a `Run`."""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from kdviz import distributed as distributed_module
from kdviz import layout, remote, run_cka
from kdviz.adapters.probe import ModelProbe, ProbeOutput
from kdviz.attention_records import AttentionRecords, exact_count
from kdviz.batching import Batch, count_samples, iter_batches, take_rows, to_device, token_length
from kdviz.cost import CaptureEstimate, check_free_space, from_records
from kdviz.errors import CaptureError, InputError, KdvizError
from kdviz.layer_map import resolve_layer_map
from kdviz.metrics import attention as attn_metrics
from kdviz.metrics import features as feature_metrics
from kdviz.metrics import logits as logit_metrics
from kdviz.metrics.vocabulary import ROLE_STATS
from kdviz.records import IGNORE_INDEX, ROLES, ClassificationRecords, TaskRecords, TokenRecords, as_numpy, pad_tokens
from kdviz.store import Run, RunWriter

THUMBNAIL_MAX = 64
MAX_VOCAB_IN_META = 300_000
TOKEN_FEATURES = ("pooled", "tokens")


def new_run_path() -> Path:
    """Where a run goes when no ``path`` is given: ``run.kdviz`` in a new temporary directory."""
    return Path(tempfile.mkdtemp(prefix="kdviz-")) / "run.kdviz"


def capture(
    teacher: nn.Module,
    student: nn.Module,
    data: Any,
    *,
    layers: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    attentions: bool = True,
    attention_samples: int | Sequence[int] | str = "auto",
    path: str | os.PathLike | None = None,
    batch_size: int = 32,
    layer_map: str | Mapping[int, int] = "uniform",
    labels: Any = None,
    class_names: Sequence[str] | None = None,
    tokens: Sequence[Sequence[str]] | None = None,
    tokenizer: Any = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    spatial_p: float | None = 2.0,
    keep_full_logits: int | Sequence[int] = 0,
    topk: int = 10,
    next_token: bool | None = None,
    vocab_size: int | None = None,
    token_features: str = "pooled",
    max_length: int | None = None,
    dry_run: bool = False,
    names: tuple[str, str] | None = None,
    overwrite: bool = False,
    extra_meta: Mapping[str, Any] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    distributed: bool | None = None,
    cka: bool = True,
) -> Run | CaptureEstimate:
    """Capture a teacher/student pair over ``data`` into a run at ``path`` and return it, opened lazily.

    - ``data``: a tensor, a dict of tensors (tokenised text), a DataLoader or any iterable of batches
      (tensors, ``(inputs, labels)`` pairs or dicts with a ``labels`` key). ``labels=`` overrides.
    - ``layers``: module paths or glob patterns to hook for features (``"encoder.layer.*.output"``), either one
      list for both models or ``{"teacher": [...], "student": [...]}``. 4-D conv features also give
      attention-transfer maps (channel mean of |A|^p, L2-normalised, ``spatial_p``). With ``None``, Hugging Face
      models store their hidden states and other models store no features.
    - ``attentions``: Hugging Face models are switched to eager attention for the capture (and back);
      timm-style fused blocks are read through `kdviz.adapters.fused`. Every sample gets a digest of its attention
      (per-head summaries, thumbnails pooled to 32 × 32, layer and head divergences: `kdviz.attention_records`);
      ``attention_samples`` keeps exact [H, T, T] maps for the first K samples, listed indices or ``"all"``; by
      default (``"auto"``) for as many first samples as fit in 0.5 MB per sample of the run: all of them for short
      inputs.
    - Language models ([B, T, V] logits) are summarised per token (forward/reverse KL, entropies, top-``topk``,
      true-token probability); ``keep_full_logits`` keeps full logits for the first K samples or given indices.
    - ``next_token``: whether the target of position t is token t + 1 (default: yes for causal LMs and
      models that are not Hugging Face ones, no otherwise).
    - ``vocab_size``: the tokenizer's real vocabulary, for language models whose output layers are padded past it
      (Qwen2: 151,936 or 152,064 rows for 151,646 ids). Both are compared over ids 0 … vocab_size − 1 only, and each
      model's mass on the padding ids is stored per token (``padding_mass``: about 0; a large value means a bug).
      When the two output layers differ in size it defaults to ``len(tokenizer)`` of a Hugging Face ``tokenizer``.
    - ``data`` may also come one sample at a time: a Hugging Face ``datasets.Dataset``, a ``torch.utils.data.Dataset``
      or a list of per-sample dicts, batched here with token ids padded per batch (as ``DataCollatorWithPadding``).
      Batches of different lengths (dynamic padding) are stored at the longest one's length, found by reading the data
      once before capturing, with their attention masks; a one-shot iterator needs ``max_length=`` instead.
    - After the first batch, a capture shows its expected size on disk and time on its progress bar, and refuses
      to go on when the run would not fit in the free space where it is written. ``dry_run=True`` (or
      `estimate`) measures the first two batches, writes nothing and returns that `CaptureEstimate`.
    - ``token_features``: token outputs [B, T, D] of hooked layers and hidden states are stored pooled by default
      (``"pooled"``: their mean over the real tokens, and the summary token, CLS or a causal LM's last, each [B, D]),
      which is what CKA and the feature views read; ``"tokens"`` keeps every token (T times the disk) for CKA with
      tokens as samples.
    - Runs under ``torch.inference_mode`` on ``device`` (default: CUDA when available, else CPU); models are
      moved there and back, and their train/eval mode is restored. Memory is bounded by one batch plus the
      writer's short queue. The run appears under ``path`` only when complete (default: a new temporary dir).
    - ``path`` may be an fsspec URL (``s3://bucket/runs/x.kdviz``): the run is written locally, then published with
      its ``meta.json`` last (`kdviz.remote`); ``storage_options`` go to fsspec (credentials also come from the
      environment).
    - Under ``torchrun`` (an initialised ``torch.distributed`` process group of several ranks) every rank calls
      ``capture`` with the same data in the same order; each captures every world-th batch and rank 0 commits the
      run (`kdviz.distributed`); ``path`` must then be a shared local path. ``distributed=False`` captures in this
      process alone (a capture on rank 0 only, or one per rank at different paths).
    - ``cka``: once the run is written, store in it the CKA its Features page opens with (`kdviz.run_cka`, read back
      from the stored features), so a served dashboard, which never writes, shows that page at once. A run on object
      storage, or without features of both models, gets none; ``cka=False`` leaves it to the first open.
    """
    shard = distributed_module.shard_for(distributed, data)
    if shard.distributed:
        distributed_module.require_path(path)
    target_device = resolve_device(device)
    if path is None:
        final_path: Path | str = new_run_path()
    else:
        final_path = os.fspath(path) if remote.is_url(path) else Path(path)
    teacher_layers, student_layers = split_layers(layers)
    teacher_name, student_name = names or (None, None)
    probes = (
        ModelProbe(teacher, "teacher", layers=teacher_layers, attentions=attentions, device=target_device,
                   spatial_p=spatial_p, name=teacher_name, head_logits=True),
        ModelProbe(student, "student", layers=student_layers, attentions=attentions, device=target_device,
                   spatial_p=spatial_p, name=student_name, head_logits=True),
    )
    session = CaptureSession(
        probes, data, batch_size=batch_size, labels=labels, tokenizer=tokenizer, keep_full_logits=keep_full_logits,
        topk=topk, next_token=next_token, vocab_size=vocab_size, progress=progress,
        description=f"kdviz capture {remote.url_name(str(final_path))}",
        shard=shard, token_features=token_features, max_length=max_length, layer_map=layer_map,
        attention_samples=attention_samples,
    )

    def make_meta() -> dict[str, Any]:
        return session.meta(class_names=class_names, tokens=tokens, attentions=attentions,
                            spatial_p=spatial_p, device=target_device, extra=extra_meta)

    if dry_run:
        return measure_first_batches(session)
    if shard.distributed:  # under torchrun: every rank captures its batches, rank 0 commits the run
        distributed_module.capture_in_parts(session, Path(final_path).expanduser().absolute(), overwrite, make_meta)
        run = Run.open(final_path)
        if cka and shard.rank == 0:  # the rank that committed the run
            store_cka(run, progress, run.name)
        return run
    with RunWriter(final_path, overwrite=overwrite, storage_options=storage_options) as writer:
        for records in session:
            if len(session.batch_seconds) == 1:  # before more is written: say what the run will cost, and check room
                expected = session.estimate(records)
                session.bar.set_postfix_str(expected.brief(), refresh=True)  # on the bar: no stray stderr line
                if not remote.is_url(final_path):
                    check_free_space(expected, final_path)
            writer.append_batch(records)
        # the run's opening CKA is stored before it is moved into place or published, so it arrives with the run
        writer.commit(make_meta(), before_publish=(
            lambda written: store_cka(Run.open(written), progress, remote.url_name(os.fspath(final_path)).removesuffix(".kdviz")))
            if cka else None)
    return Run.open(final_path, storage_options=storage_options)


def store_cka(run: Run, progress: bool, name: str) -> None:
    """`run_cka.store_opening_cka` for a run just captured (``name``: the run's final name, since it may still lie in
    its temporary directory). A run whose features give no CKA (too few samples, a non-finite value) is still a run:
    the Features page says why when it is opened, and a warning says so now."""
    try:
        run_cka.store_opening_cka(run, progress=progress)
    except KdvizError as exc:
        warnings.warn(f"run {name!r} was captured, but its CKA could not be stored: {exc}", stacklevel=3)


def estimate(teacher: nn.Module, student: nn.Module, data: Any, **options: Any) -> CaptureEstimate:
    """What ``capture(teacher, student, data, **options)`` would cost on disk and in time, from its first two
    batches, without writing anything (``capture(..., dry_run=True)``)."""
    options.pop("dry_run", None)
    return capture(teacher, student, data, dry_run=True, **{"progress": False, **options})


def measure_first_batches(session: CaptureSession, batches: int = 2) -> CaptureEstimate:
    """Run the session's first ``batches`` batches (the second times a warm model) and estimate from them."""
    iterator = iter(session)
    first = None
    try:
        for records in iterator:
            first = first if first is not None else records
            if len(session.batch_seconds) >= batches:
                break
    finally:
        iterator.close()  # the models' modes, devices and hooks are restored now, not when garbage is collected
    if first is None:
        raise InputError("the data yielded no samples; pass a non-empty tensor, dict or DataLoader")
    return session.estimate(first)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device to capture on: the one asked for, else CUDA when available (``cuda:LOCAL_RANK`` under torchrun),
    else the CPU."""
    if device is not None:
        return torch.device(device)
    return distributed_module.default_device(distributed_module.Shard.current())


class CaptureSession:
    """Iterates the data once, yielding per batch a dict of array key -> rows (numpy) to store.

    Kept apart from the writer so the hooks-only cost can be measured (see benchmarks/capture_overhead.py).
    After iteration, `meta` describes what was captured.
    """

    def __init__(
        self,
        probes: tuple[ModelProbe, ModelProbe],
        data: Any,
        *,
        batch_size: int = 32,
        labels: Any = None,
        tokenizer: Any = None,
        keep_full_logits: int | Sequence[int] = 0,
        topk: int = 10,
        next_token: bool | None = None,
        vocab_size: int | None = None,
        progress: bool = True,
        description: str = "kdviz capture",
        shard: distributed_module.Shard | None = None,
        token_features: str = "pooled",
        max_length: int | None = None,
        layer_map: str | Mapping[int, int] = "uniform",
        attention_samples: int | Sequence[int] | str = "auto",
    ) -> None:
        if token_features not in TOKEN_FEATURES:
            raise InputError(f"token_features must be one of {TOKEN_FEATURES}, got {token_features!r}")
        self.probes = probes
        self.layer_map = layer_map
        exact_count(attention_samples, n_samples=None, bytes_per_sample=0)  # a bad value fails before any forward pass
        self.attention_samples = attention_samples
        self.attention: AttentionRecords | None = None  # what is stored of attention, set up at the first batch
        self.token_features = token_features
        self.summary_token: str | None = None  # "first" or "last", chosen at the first batch
        if max_length is not None and max_length < 1:
            raise InputError(f"max_length must be a positive number of tokens, got {max_length}")
        self.max_length = max_length  # every text batch is stored at this many tokens (found at iteration start)
        self.data = data
        self.batch_size = batch_size
        self.labels = labels
        self.decode = _token_decoder(tokenizer)
        if vocab_size is not None and (not isinstance(vocab_size, int) or vocab_size < 1):
            raise InputError(f"vocab_size must be a positive number of token ids, got {vocab_size!r}")
        self.vocab_size = vocab_size
        self.tokenizer_size = len(tokenizer) if hasattr(tokenizer, "convert_ids_to_tokens") else None
        self.keep = keep_full_logits
        self.topk = topk
        self.next_token = next_token
        self.progress = progress
        self.n_samples = 0
        self.task: str | None = None
        self.structure: dict[str, dict[str, Any]] = {}
        self.decoded_tokens: list[list[str]] = []
        self.builder: TaskRecords | None = None  # the task's record builder, chosen at the first batch
        self.seq_len: int | None = None
        self.n_classes: int | None = None
        self.labelled = False
        self.description = description
        # with a shard of several ranks (capture under torchrun) this process captures every world-th batch
        self.shard = shard or distributed_module.Shard()
        self.offset = 0  # index in the whole data of the current batch's first sample
        self.captured: list[int] = []  # indices of the batches this process captured
        self.batch_sizes: list[int] = []
        self.batch_seconds: list[float] = []  # forward passes and records of each batch captured here
        self.bar: Any = None  # the progress bar while iterating (capture writes the run's expected cost on it)
        self.total_samples = 0

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        total = count_samples(self.data)
        shard = self.shard
        description = self.description + (f" (rank {shard.rank} of {shard.world})" if shard.distributed else "")
        bar = self.bar = tqdm(total=total, unit="sample", desc=description, disable=not self.progress or shard.rank != 0)
        offset = 0
        pad_id = self.pad_id
        if self.max_length is None:
            self.max_length = token_length(self.data, self.batch_size, self.main_input_name)
        with self.probes[0], self.probes[1], bar:
            for index, batch in enumerate(iter_batches(self.data, self.batch_size, self.labels, pad_id=pad_id)):
                if shard.owns(index):
                    self.offset = offset
                    started = time.perf_counter()
                    with torch.inference_mode():
                        inputs = to_device(batch.inputs, self.probes[0].device)
                        if not self.captured:
                            self._scout_attention(batch, inputs)
                        streaming = self._stream_attention(batch)
                        outputs = tuple(probe.forward(inputs, self.offset) for probe in self.probes)
                        records = self._records(batch, outputs, streaming)
                    self.batch_seconds.append(time.perf_counter() - started)
                    self.captured.append(index)
                    self.batch_sizes.append(batch.size)
                    self.n_samples += batch.size
                    yield records
                offset += batch.size
                bar.update(batch.size)
        self.total_samples = offset
        if offset == 0:
            raise InputError("the data yielded no samples; pass a non-empty tensor, dict or DataLoader")

    # ---- combining the sessions of several processes ----
    def state(self) -> dict[str, Any]:
        """What `meta` needs from this process's batches, for rank 0 to `absorb` (small: no arrays)."""
        return {"records": self.builder.state() if self.builder is not None else None, "task": self.task,
                "attention": self.attention.state() if self.attention is not None else None,
                "summary_token": self.summary_token,
                "n_classes": self.n_classes, "structure": self.structure, "seq_len": self.seq_len,
                "labelled": self.labelled if self.captured else None, "decoded_tokens": self.decoded_tokens,
                "captured": self.captured, "batch_sizes": self.batch_sizes, "total": self.total_samples}

    def absorb(self, states: list[dict[str, Any]]) -> None:
        """Become the session of the whole data from every rank's `state` (this one's included): counts summed,
        decoded tokens and kept rows put back in data order; the ranks must agree on what they saw."""
        active = [state for state in states if state["captured"]]
        first = active[0]
        batches = sorted(index for state in states for index in state["captured"])
        if len({state["total"] for state in states}) != 1 or batches != list(range(len(batches))):
            raise InputError("the ranks saw different data (a different number of samples or batches); under torchrun "
                             "every rank must iterate the same data in the same order: no DistributedSampler, and the "
                             "same seed for a shuffled loader")
        for key, what in (("task", "task"), ("n_classes", "number of classes"), ("seq_len", "sequence length"),
                          ("labelled", "labels"), ("structure", "layers")):
            if any(state[key] != first[key] for state in active):
                raise InputError(f"the ranks saw different {what} in their batches; every batch must have the same form")
        self.task, self.n_classes, self.seq_len = first["task"], first["n_classes"], first["seq_len"]
        self.summary_token = first["summary_token"]
        self.structure = first["structure"]
        self.builder = self.builder or self._builder_for(self.task)
        self.builder.absorb([state["records"] for state in active])
        if self.attention is not None:  # rank 0 owns the first batch, so it has set up the attention records
            self.attention.absorb([state["attention"] for state in active if state["attention"] is not None])
        tokens_by_batch: dict[int, list[list[str]]] = {}
        for state in active:
            rows = iter(state["decoded_tokens"])
            for index, size in zip(state["captured"], state["batch_sizes"], strict=True):
                tokens_by_batch[index] = [next(rows) for _ in range(size)] if state["decoded_tokens"] else []
        self.decoded_tokens = [row for index in sorted(tokens_by_batch) for row in tokens_by_batch[index]]
        self.n_samples = first["total"]

    # ---- per batch ----
    def _scout_attention(self, batch: Batch, inputs: Any) -> None:
        """Before the first batch of models that can stream their attention: one forward pass of its first sample
        learns both models' layers, so that every batch, the first included, streams (one sample's cost)."""
        if self.attention is not None or not all(probe.can_stream for probe in self.probes):
            return
        one = take_rows(inputs, torch.zeros(1, dtype=torch.long, device=self.probes[0].device))
        outputs = tuple(probe.forward(one) for probe in self.probes)
        main = batch.main_tensor(self.main_input_name)
        for role, out in zip(ROLES, outputs, strict=True):
            self._record_structure(role, out, tuple(main.shape))
        self._learn_length(batch)
        self.attention = self._attention_records(outputs)

    def _stream_attention(self, batch: Batch) -> bool:
        """Both models hand their attention layers to the digest as they compute them, so no model's every layer is
        held at once (`ModelProbe.stream_attentions`; families that cannot stream collect)."""
        attention = self.attention
        sinks = [None, None] if attention is None else [
            lambda layer, maps, role=role: attention.add(role, layer, maps) for role in ROLES]
        streaming = all([probe.stream_attentions(sink) for probe, sink in zip(self.probes, sinks, strict=True)])
        if not streaming:
            for probe in self.probes:
                probe.stream_attentions(None)
            return False
        length = self._batch_length(batch)
        attention.start(self.offset, batch.attention_mask, batch.size, length if length is not None else attention.seq_len)
        return True

    def _records(self, batch: Batch, outputs: tuple[ProbeOutput, ProbeOutput],
                 streaming: bool = False) -> dict[str, np.ndarray]:
        offset = self.offset
        z_t, z_s = outputs[0].logits, outputs[1].logits
        task = "classification" if z_t.ndim == 2 else "tokens"
        vocab = self._compared_vocabulary(z_t, z_s) if task == "tokens" else None
        logit_metrics.check_vocabulary(z_t, z_s, vocab)
        if task == "classification":  # vocabulary-sized logits are checked through their statistics (TokenRecords)
            for role, z in zip(ROLES, (z_t, z_s), strict=True):
                logit_metrics.check_finite(z, f"{role} logits", offset)
        if self.task is None:
            self.task = task
            self.n_classes = int(vocab if vocab is not None else z_t.shape[-1])
            self.builder = self._builder_for(task, vocab)
            self.summary_token = self._summary_token(task)
            main = batch.main_tensor(self.main_input_name)
            for role, out in zip(ROLES, outputs, strict=True):
                if role not in self.structure:  # learnt already when a first sample was scouted
                    self._record_structure(role, out, tuple(main.shape))
        records: dict[str, np.ndarray] = {}
        records.update(self._input_records(batch))  # the first batch sets the stored length
        if not self.captured and self.attention is None:
            self.attention = self._attention_records(outputs)
        length = self._batch_length(batch)  # tokens in this batch, when it is text; stored at self.seq_len
        task_records = self.builder.records(batch, outputs, offset)
        if self.task == "tokens":  # every token-task array is [B, T, …]; the labels pad with "no target"
            task_records = {key: pad_tokens(rows, (1,), self.seq_len, IGNORE_INDEX if key == layout.LABELS else 0)
                            for key, rows in task_records.items()}
        records.update(task_records)
        mask = batch.attention_mask
        for role, out, probe in zip(ROLES, outputs, self.probes, strict=True):
            self._check_structure(role, out, probe.streamed if streaming else len(out.attentions))
        if streaming:
            records.update(self.attention.finish())
        elif self.attention is not None:
            records.update(self.attention.records(offset, mask, outputs[0].attentions, outputs[1].attentions))
        for role, out in zip(ROLES, outputs, strict=True):
            records.update(self._feature_records(role, out.features, mask, length))
            records.update({layout.spatial(role, name): as_numpy(v) for name, v in out.spatial.items()})
        return records

    def _attention_records(self, outputs: tuple[ProbeOutput, ProbeOutput]) -> AttentionRecords | None:
        """How this capture stores attention, once both models' layers are known (None: one of them has none)."""
        heads = {role: self.structure[role]["heads"] for role in ROLES}
        if not heads["teacher"] or not heads["student"]:
            return None
        pairs = resolve_layer_map(self.layer_map, len(heads["teacher"]), len(heads["student"]))
        n_tokens = int(outputs[0].attentions[0].shape[-1])
        seq_len = self.seq_len if self.seq_len is not None else n_tokens
        positions = {}
        for role in ROLES:
            grid = self.structure[role]["token_grid"]
            positions[role] = (attn_metrics.token_positions(seq_len, grid["grid"], grid["prefix"]) if grid
                               else attn_metrics.token_positions(seq_len))
        return AttentionRecords(self.attention_samples, pairs=[(p["teacher"], p["student"]) for p in pairs],
                                positions=positions, seq_len=seq_len, n_samples=count_samples(self.data), heads=heads)

    def _learn_length(self, batch: Batch) -> int | None:
        """This text batch's length; the first one sets the stored length (``max_length`` when longer)."""
        length = self._batch_length(batch)
        if length is not None and self.seq_len is None:
            self.seq_len = max(length, self.max_length or 0)
        return length

    def _batch_length(self, batch: Batch) -> int | None:
        main = batch.main_tensor(self.main_input_name)
        return int(main.shape[1]) if not main.is_floating_point() and main.ndim == 2 else None

    @property
    def pad_id(self) -> int:
        """The token id that pads samples batched here (the teacher's pad token)."""
        probe = self.probes[0]
        return int(probe.family.pad_token_id(probe.model))

    def _pools(self, value: torch.Tensor) -> bool:
        """Whether a feature is stored pooled: token outputs [B, T, D] unless every token was asked for."""
        return self.token_features == "pooled" and value.ndim == 3

    def _feature_records(self, role: str, features: Mapping[str, torch.Tensor], mask: torch.Tensor | None,
                         length: int | None) -> dict[str, np.ndarray]:
        """The stored form of one model's features: token outputs as their mean over the real tokens and their
        summary token ([B, D] each, computed where the model ran), everything else as it came."""
        records = {}
        for name, value in features.items():
            if self._pools(value):
                valid = feature_metrics.token_mask(value, mask)
                records[layout.features(role, name)] = as_numpy(feature_metrics.mean_over_tokens(value.float(), valid))
                records[layout.summary_features(role, name)] = as_numpy(
                    feature_metrics.summary_token(value, valid, self.summary_token or "first").float())
            else:
                padded = length is not None and value.ndim >= 3 and value.shape[1] == length
                records[layout.features(role, name)] = pad_tokens(as_numpy(value), (1,), self.seq_len if padded else None)
        return records

    def _summary_token(self, task: str) -> str:
        """The token that sums a sequence up: a language model's last when it predicts the next token, else the
        one its family names (CLS first; the last for decoder classifiers)."""
        if task == "tokens":
            builder = self.builder
            return "last" if isinstance(builder, TokenRecords) and builder.next_token else "first"
        probe = self.probes[0]
        return probe.family.summary_token(probe.model)

    def estimate(self, records: Mapping[str, np.ndarray]) -> CaptureEstimate:
        """The run's expected cost from the first batch's ``records`` and the batches timed so far (the last, as the
        first includes one-time warm-up)."""
        samples = count_samples(self.data)
        subsets: dict[str, int] = {}
        for key in records:  # exact attention maps and full logits of chosen samples: counted as many as there will be
            kept = (self.attention.keep if self.attention is not None and key.startswith(layout.attention_prefixes())
                    else self.keep if isinstance(self.builder, TokenRecords) and key in layout.logit_keys() else None)
            if kept is not None and not (isinstance(kept, int) and samples is None):  # unknown N: counted per sample
                subsets[key] = len(kept) if not isinstance(kept, int) else min(kept, samples)
        return from_records(records, batch_size=self.batch_sizes[0], seconds=self.batch_seconds[-1] * self.batch_sizes[0]
                            / self.batch_sizes[-1], samples=samples, sampled=sum(self.batch_sizes), subsets=subsets)

    @property
    def main_input_name(self) -> str | None:
        """The key of the recorded input in dict batches, as the teacher's family names it (None: guessed)."""
        return self.probes[0].family.main_input_name(self.probes[0].model)

    @property
    def has_labels(self) -> bool:
        return self.builder is not None and self.builder.has_labels

    def quality(self, role: str) -> dict[str, float | None]:
        """Accuracy and perplexity of one model over the batches captured (`records.TaskRecords.quality`)."""
        return self.builder.quality(role) if self.builder is not None else {"accuracy": None, "perplexity": None}

    def _builder_for(self, task: str | None, vocab: int | None = None) -> TaskRecords:
        if task == "classification":
            return ClassificationRecords()
        next_token = self.next_token
        if next_token is None:  # the model's family knows whether position t predicts token t + 1
            next_token = self.probes[0].family.predicts_next_token(self.probes[0].model)
        return TokenRecords(topk=self.topk, keep=self.keep, next_token=next_token, vocab=vocab)

    def _compared_vocabulary(self, z_t: Any, z_s: Any) -> int | None:
        """The ids two language models are compared over: ``vocab_size``; else, when their output layers differ in
        size (one padded past the tokenizer), the tokenizer's length; else None (all of them)."""
        if self.vocab_size is not None:
            return self.vocab_size
        if z_t.shape[-1] == z_s.shape[-1]:
            return None
        if self.tokenizer_size is not None:
            return self.tokenizer_size
        raise InputError(
            f"the teacher predicts over {z_t.shape[-1]} token ids and the student over {z_s.shape[-1]}: if one output "
            "layer is padded past the tokenizer, pass vocab_size= the tokenizer's real vocabulary (len(tokenizer)) or "
            "tokenizer=; models with different tokenizers need each their own token ids")

    def _input_records(self, batch: Batch) -> dict[str, np.ndarray]:
        records: dict[str, np.ndarray] = {}
        main = batch.main_tensor(self.main_input_name)
        length = self._learn_length(batch)
        if length is not None:
            if length > self.seq_len:
                raise InputError(
                    f"the batch starting at sample {self.offset} has {length} tokens but the run stores "
                    f"{self.seq_len}; pass max_length= the longest batch's length (a one-shot iterator cannot be read "
                    "ahead for it), or pad every batch to one length: tokenizer(..., padding='max_length', max_length=N)"
                )
            mask = batch.attention_mask if batch.attention_mask is not None else torch.ones_like(main)
            records[layout.TOKEN_IDS] = pad_tokens(as_numpy(main).astype(np.int32), (1,), self.seq_len, self.pad_id)
            records[layout.ATTENTION_MASK] = pad_tokens(as_numpy(mask).astype(np.uint8), (1,), self.seq_len)
            if self.decode is not None:
                blank = [""] * (self.seq_len - length)
                self.decoded_tokens.extend([self.decode(int(i)) for i in row] + blank for row in main.tolist())
        elif main.is_floating_point() and main.ndim in (3, 4):
            records[layout.THUMBNAILS] = thumbnails(main)
        labelled = batch.labels is not None
        if not self.captured:
            self.labelled = labelled
        elif labelled != self.labelled:
            raise InputError(
                f"the batch starting at sample {self.offset} {'has' if labelled else 'lacks'} labels, unlike the first batch; "
                "give labels for every batch or for none (or pass labels= for all samples)"
            )
        return records

    def _vocabulary(self) -> list[str] | None:
        """id -> token string for the whole output vocabulary, so top-k ids can be shown as text."""
        if self.decode is None or self.n_classes is None or self.n_classes > MAX_VOCAB_IN_META:
            return None
        return [self.decode(i) for i in range(self.n_classes)]

    # ---- structure of what is captured ----
    def _record_structure(self, role: str, out: ProbeOutput, input_shape: tuple[int, ...] | None) -> None:
        probe = self.probes[ROLES.index(role)]
        n_tokens = int(out.attentions[0].shape[-1]) if out.attentions else None
        self.structure[role] = {
            "token_grid": probe.family.token_grid(probe.model, n_tokens, input_shape) if n_tokens else None,
            "attention_layers": probe.attention_names[: len(out.attentions)],
            "heads": [int(a.shape[1]) for a in out.attentions],
            "feature_names": list(out.features),
            "feature_shapes": {name: list(v.shape[2:] if self._pools(v) else v.shape[1:]) for name, v in out.features.items()},
            "pooled_features": [name for name, v in out.features.items() if self._pools(v)],
            "spatial_names": list(out.spatial),
        }

    def _check_structure(self, role: str, out: ProbeOutput, attention_layers: int) -> None:
        known = self.structure[role]
        if attention_layers != len(known["heads"]) or list(out.features) != known["feature_names"]:
            raise CaptureError(f"the {role} produced different layers in this batch than in the first one; capture needs a fixed structure")

    def meta(
        self,
        *,
        class_names: Sequence[str] | None,
        tokens: Sequence[Sequence[str]] | None,
        attentions: bool,
        spatial_p: float | None,
        device: torch.device,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The run's ``meta.json`` content, once iteration is done."""
        models = {}
        for role, probe in zip(ROLES, self.probes, strict=True):
            models[role] = {**probe.describe(), **self.structure[role], **self.quality(role)}
        if self.task == "tokens":
            for model in models.values():
                model["token_stats"] = [stat for stat in ROLE_STATS if (stat != "true_prob" or self.has_labels) and (
                    stat != "padding_mass" or getattr(self.builder, "vocab", None) is not None)]
        unit = "attention" if models["teacher"]["heads"] and models["student"]["heads"] else "features"
        key = "heads" if unit == "attention" else "feature_names"
        layer_map = self.layer_map
        pairs = resolve_layer_map(layer_map, len(models["teacher"][key]), len(models["student"][key]))
        if class_names is not None and self.task == "classification" and len(class_names) != self.n_classes:
            raise InputError(f"class_names has {len(class_names)} names but the models predict {self.n_classes} classes")
        if tokens is not None and len(tokens) != self.n_samples:
            raise InputError(f"tokens= has {len(tokens)} entries but the data had {self.n_samples} samples")
        return {
            "task": self.task,
            "n_samples": self.n_samples,
            "n_classes": self.n_classes,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "teacher": models["teacher"],
            "student": models["student"],
            "layer_map": {"spec": layer_map if isinstance(layer_map, str) else "explicit", "unit": unit, "pairs": pairs},
            "class_names": [str(c) for c in class_names] if class_names is not None else None,
            "tokens": [list(map(str, t)) for t in tokens] if tokens is not None else (self.decoded_tokens or None),
            "vocab": self._vocabulary() if self.task == "tokens" else None,
            "inputs": {"labels": self.has_labels, "seq_len": self.seq_len},
            "capture": {
                "batch_size": self.batch_size,
                "attentions": attentions,
                "attention_dtype": "float16",
                **(self.attention.settings() if self.attention is not None else {"attention_samples": None}),
                "spatial_p": spatial_p,
                "token_features": self.token_features,
                "summary_token": self.summary_token,
                **(self.builder.settings() if self.builder is not None else {"topk": None, "full_logits_index": None}),
                "next_token": self.next_token,
                "device": str(device),
                "torch_version": torch.__version__,
            },
            **({"extra": dict(extra)} if extra else {}),
        }

def thumbnails(images: torch.Tensor, max_size: int = THUMBNAIL_MAX) -> np.ndarray:
    """Display thumbnails [B, h, w] (grey) or [B, h, w, 3] uint8 from images [B, C, H, W] or [B, H, W], min-max scaled per image."""
    x = images.detach().float()
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.shape[1] not in (1, 3):
        x = x[:, :1]
    height, width = x.shape[-2:]
    scale = min(1.0, max_size / max(height, width))
    if scale < 1.0:
        x = F.adaptive_avg_pool2d(x, (max(1, int(height * scale)), max(1, int(width * scale))))
    flat = x.reshape(x.shape[0], -1)
    lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    x = (x - lo[:, None, None, None]) / (hi - lo).clamp_min(1e-12)[:, None, None, None]
    out = (x * 255).round().clamp(0, 255).to(torch.uint8)
    out = out[:, 0] if out.shape[1] == 1 else out.permute(0, 2, 3, 1)
    return out.cpu().numpy()


def split_layers(layers: Any) -> tuple[list[str] | None, list[str] | None]:
    """(teacher modules, student modules) from one list for both, a single name, or ``{"teacher": …, "student": …}``."""
    if layers is None:
        return None, None
    if isinstance(layers, str):
        layers = [layers]
    if isinstance(layers, Mapping):
        unknown = set(layers) - set(ROLES)
        if unknown:
            raise InputError(f"layers dict keys must be 'teacher' and 'student', got {sorted(unknown)}")
        return _as_list(layers.get("teacher")), _as_list(layers.get("student"))
    return list(layers), list(layers)


def _as_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def _token_decoder(tokenizer: Any) -> Callable[[int], str] | None:
    """A function id -> token string from a HF tokenizer, a vocabulary list/dict, or a callable."""
    if tokenizer is None:
        return None
    if hasattr(tokenizer, "convert_ids_to_tokens"):
        return lambda i: str(tokenizer.convert_ids_to_tokens(i))
    if isinstance(tokenizer, Sequence | Mapping):
        return lambda i: str(tokenizer[i])
    if callable(tokenizer):
        return lambda i: str(tokenizer(i))
    raise InputError("tokenizer must be a Hugging Face tokenizer, a vocabulary (list or dict id -> token) or a callable")


def live_cka(
    teacher: nn.Module,
    student: nn.Module,
    data: Any,
    *,
    layers: Sequence[str] | Mapping[str, Sequence[str]],
    unbiased: bool = True,
    conv: str = "flatten",
    tokens: str = "mean",
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = True,
    distributed: bool | None = None,
) -> dict[str, Any]:
    """CKA between every hooked teacher and student layer straight from the models, storing no activations.

    The same hooks as `capture` feed each batch's features into `metrics.features.MinibatchCKA`; memory is one batch.
    Under torchrun (``distributed`` as in `capture`) each process takes every world-th batch and the accumulators
    are summed with ``all_reduce``, so every rank gets the result for the whole data.
    Returns what `run_cka.cka_matrix` returns for a run (batches follow the same rules).
    """
    from kdviz.metrics.features import MinibatchCKA, add_pooled_batch, cka_result

    shard = distributed_module.shard_for(distributed, data)
    target_device = resolve_device(device)
    teacher_layers, student_layers = split_layers(layers)
    probes = (
        ModelProbe(teacher, "teacher", layers=teacher_layers, attentions=False, device=target_device, spatial_p=None),
        ModelProbe(student, "student", layers=student_layers, attentions=False, device=target_device, spatial_p=None),
    )
    session = CaptureSession(probes, data, batch_size=batch_size, progress=progress, description="kdviz live CKA",
                             shard=shard, token_features="tokens")
    accumulator: MinibatchCKA | None = None
    names: tuple[list[str], list[str]] = ([], [])

    def accumulate() -> None:
        nonlocal accumulator, names
        for records in session:
            feats = {role: {name: v for k, v in records.items() if (name := layout.feature_name(k, role)) is not None}
                     for role in ROLES}
            if accumulator is None:
                names = (list(feats["teacher"]), list(feats["student"]))
                accumulator = MinibatchCKA(len(names[0]), len(names[1]), unbiased=unbiased)
            add_pooled_batch(accumulator, [feats["teacher"][k] for k in names[0]], [feats["student"][k] for k in names[1]],
                             conv=conv, tokens=tokens, mask=records.get(layout.ATTENTION_MASK),
                             summary=session.summary_token or "first")
        if accumulator is None and shard.distributed:
            raise InputError(f"rank {shard.rank} got no batches; use a smaller batch_size or fewer processes")

    if shard.distributed:  # every rank reports (a failure on one reaches all), then the accumulators are summed
        distributed_module.agree("computing live CKA", distributed_module.attempt(accumulate)[1])
        accumulator.all_reduce(distributed_module.cpu_group())
    else:
        accumulate()
    if accumulator is None:
        raise InputError("the data yielded no samples")
    return cka_result(accumulator, names[0], names[1], conv=conv, tokens=tokens)


