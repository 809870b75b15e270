"""Turn what users pass as ``data`` (tensor, dict of tensors, DataLoader, iterable of batches) into uniform batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kdviz import samples
from kdviz.errors import InputError

LABEL_KEYS = ("labels", "label", "targets", "target", "y")


@dataclass
class Batch:
    """One batch: model inputs (a tensor, or a dict of keyword tensors), optional labels, and its size."""

    inputs: torch.Tensor | dict[str, Any]
    labels: torch.Tensor | None
    size: int

    @property
    def attention_mask(self) -> torch.Tensor | None:
        """[B, T] 1 on real tokens, when the batch is a dict that has one."""
        return attention_mask(self.inputs)

    def main_tensor(self, main_key: str | None = None) -> torch.Tensor:
        """The tensor the thumbnails / token ids come from: the tensor itself, or the model's main input."""
        if isinstance(self.inputs, torch.Tensor):
            return self.inputs
        return self.inputs[main_input_key(self.inputs, main_key)]


def attention_mask(inputs: Any) -> torch.Tensor | None:
    """The ``attention_mask`` of dict inputs [B, T], else None."""
    return inputs.get("attention_mask") if isinstance(inputs, dict) else None


def main_input_key(inputs: Mapping[str, Any], preferred: str | None = None) -> str:
    """Key of a dict batch's main input: ``preferred`` (a model's ``main_input_name``), else the usual names, else
    the first tensor."""
    for key in (preferred, *samples.MAIN_INPUT_KEYS):
        if key and isinstance(inputs.get(key), torch.Tensor):
            return key
    return next(k for k, v in inputs.items() if isinstance(v, torch.Tensor))


def count_samples(data: Any) -> int | None:
    """The number of samples when it can be known without iterating, else None."""
    if isinstance(data, torch.Tensor | np.ndarray) or samples.is_sample_collection(data):
        return len(data)
    if _is_input_label_pair(data):
        return len(data[1])
    if isinstance(data, Mapping):
        return _dict_length(data)
    dataset = getattr(data, "dataset", None)
    if dataset is not None and hasattr(dataset, "__len__") and getattr(data, "sampler", None) is not None:
        sampler = data.sampler
        return len(sampler) if hasattr(sampler, "__len__") else len(dataset)
    return None


def iter_batches(data: Any, batch_size: int, labels: Any = None, *, pad_id: int = 0) -> Iterator[Batch]:
    """Yield `Batch`es from ``data``; ``labels`` (length N, in data order) overrides labels found in batches.
    Data given sample by sample (`kdviz.samples`) is batched here, token ids padded with ``pad_id``."""
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    given = None if labels is None else torch.as_tensor(np.asarray(labels))
    offset = 0
    for inputs, batch_labels in _raw_batches(data, batch_size, pad_id):
        size = _batch_size_of(inputs)
        if given is not None:
            if offset + size > len(given):
                raise InputError(f"labels= has {len(given)} entries but the data has more samples; pass one label per sample")
            batch_labels = given[offset : offset + size]
        yield Batch(inputs=inputs, labels=batch_labels, size=size)
        offset += size
    if given is not None and offset != len(given):
        raise InputError(f"labels= has {len(given)} entries but the data had {offset} samples; pass one label per sample")


def token_length(data: Any, batch_size: int, main_key: str | None = None) -> int | None:
    """The longest batch of token ids [B, T] that ``data`` gives, found before capturing so that batches of
    different lengths (dynamic padding) can be stored at one length; None for data of one shape, for inputs that
    are not token ids, and for one-shot iterators (which cannot be read twice)."""
    if isinstance(data, torch.Tensor | np.ndarray | Mapping) or _is_input_label_pair(data):
        return None
    if samples.is_sample_collection(data):
        return samples.longest(data)
    if not isinstance(data, Iterable) or iter(data) is data:  # an iterator: reading it here would consume it
        return None
    lengths = []
    for batch in iter_batches(data, batch_size):
        main = batch.main_tensor(main_key)
        if main.is_floating_point() or main.ndim != 2:
            return None
        lengths.append(int(main.shape[1]))
    return max(lengths, default=None)


def _raw_batches(data: Any, batch_size: int, pad_id: int = 0) -> Iterator[tuple[Any, torch.Tensor | None]]:
    if samples.is_sample_collection(data):
        for batch in samples.batches_of(data, batch_size, pad_id):
            yield _unpack(batch)
        return
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if isinstance(data, torch.Tensor):
        for start in range(0, len(data), batch_size):
            yield data[start : start + batch_size], None
        return
    if _is_input_label_pair(data):
        inputs, targets = (torch.as_tensor(np.asarray(v)) if isinstance(v, np.ndarray) else v for v in data)
        for start in range(0, len(targets), batch_size):
            yield _slice_any(inputs, start, start + batch_size), targets[start : start + batch_size]
        return
    if isinstance(data, Mapping):
        length = _dict_length(data)
        for start in range(0, length, batch_size):
            yield _split_dict(_slice_dict(data, start, start + batch_size))
        return
    if not isinstance(data, Iterable):
        raise InputError(
            f"data of type {type(data).__name__} is not supported; pass a tensor, a dict of tensors, a DataLoader, "
            "an iterable of batches, a torch or Hugging Face Dataset, or a list of per-sample dicts"
        )
    for item in data:
        yield _unpack(item)


def _is_input_label_pair(data: Any) -> bool:
    """A whole data set given as ``(inputs, labels)``: a tensor or dict of tensors, and labels of the same length."""
    if not (isinstance(data, tuple) and len(data) == 2):
        return False
    inputs, targets = data
    if not isinstance(targets, torch.Tensor | np.ndarray) or targets.ndim == 0:
        return False
    if isinstance(inputs, torch.Tensor | np.ndarray):
        return len(inputs) == len(targets)
    return isinstance(inputs, Mapping) and _dict_length(inputs) == len(targets)


def _slice_any(inputs: Any, start: int, stop: int) -> Any:
    return _slice_dict(inputs, start, stop) if isinstance(inputs, Mapping) else inputs[start:stop]


def _unpack(item: Any) -> tuple[Any, torch.Tensor | None]:
    if isinstance(item, torch.Tensor):
        return item, None
    if isinstance(item, np.ndarray):
        return torch.from_numpy(item), None
    if isinstance(item, Mapping):
        return _split_dict(item)
    if isinstance(item, list | tuple) and item:
        inputs = item[0]
        if isinstance(inputs, np.ndarray):
            inputs = torch.from_numpy(inputs)
        label = torch.as_tensor(np.asarray(item[1])) if len(item) > 1 and item[1] is not None else None
        if isinstance(inputs, Mapping):
            inputs, inner = _split_dict(inputs)
            label = label if label is not None else inner
        return inputs, label
    raise InputError(
        f"a batch of type {type(item).__name__} is not supported; yield a tensor, an (inputs, labels) pair, or a dict of tensors"
    )


def _split_dict(batch: Mapping[str, Any]) -> tuple[dict[str, Any], torch.Tensor | None]:
    inputs = dict(batch)
    label = None
    for key in LABEL_KEYS:
        if key in inputs:
            label = torch.as_tensor(np.asarray(inputs.pop(key)))
            break
    if not any(isinstance(v, torch.Tensor) for v in inputs.values()):
        raise InputError(f"a dict batch needs at least one tensor besides the labels; got keys {sorted(batch)}; "
                         "tokenise text first, for example tokenizer(texts, padding=True, return_tensors='pt')")
    return inputs, label


def _dict_length(data: Mapping[str, Any]) -> int:
    lengths = {len(v) for v in data.values() if isinstance(v, torch.Tensor | np.ndarray)}
    if len(lengths) != 1:
        raise InputError(f"the tensors of a dict input must share their first dimension; got lengths {sorted(lengths)}")
    return lengths.pop()


def _slice_dict(data: Mapping[str, Any], start: int, stop: int) -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        out[key] = value[start:stop] if isinstance(value, torch.Tensor) else value
    return out


def _batch_size_of(inputs: Any) -> int:
    if isinstance(inputs, torch.Tensor):
        return len(inputs)
    return len(next(v for v in inputs.values() if isinstance(v, torch.Tensor)))


def to_device(inputs: Any, device: torch.device) -> Any:
    """Move a tensor or the tensors of a dict to ``device``."""
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device, non_blocking=True)
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def take_rows(inputs: Any, rows: torch.Tensor) -> Any:
    """The given rows [k] of a batch's inputs: a tensor, or every batch-sized tensor of a dict (others kept as they are)."""
    if isinstance(inputs, torch.Tensor):
        return inputs[rows]
    size = _batch_size_of(inputs)
    return {k: v[rows] if isinstance(v, torch.Tensor) and v.ndim and len(v) == size else v for k, v in inputs.items()}
