"""Data given one sample at a time: a Hugging Face ``datasets.Dataset``, a ``torch.utils.data.Dataset`` or a list of
per-sample dicts. `batches_of` groups them into batches as a DataLoader with ``DataCollatorWithPadding`` would:
stacked where the samples agree in shape, token sequences padded to the batch's longest with an attention mask.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from kdviz.errors import InputError

PAD_VALUES = {"labels": -100, "label": -100, "attention_mask": 0}  # what pads each key; others take the pad id
MAIN_INPUT_KEYS = ("input_ids", "pixel_values", "x", "inputs")  # the usual names of a model's main input


def is_sample_collection(data: Any) -> bool:
    """Whether ``data`` holds single samples rather than batches: a map-style torch Dataset, a Hugging Face
    ``datasets.Dataset``, or a list or tuple of per-sample dicts (token ids a list or a 1-D array)."""
    if _is_hf_dataset(data):
        return True
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        return hasattr(data, "__len__") and hasattr(data, "__getitem__")
    if isinstance(data, list | tuple) and data and isinstance(data[0], Mapping):
        return _is_single_sample(data[0])
    return False


def _is_hf_dataset(data: Any) -> bool:
    return type(data).__module__.split(".")[0] == "datasets" and hasattr(data, "column_names") and hasattr(data, "__len__")


def _is_single_sample(item: Mapping[str, Any]) -> bool:
    """A dict is one sample when its token ids are a list or a 1-D array (a batch's are [B, T])."""
    for key in MAIN_INPUT_KEYS:
        value = item.get(key)
        if value is not None:
            return isinstance(value, list) or (hasattr(value, "ndim") and value.ndim == (1 if key == "input_ids" else 3))
    return False


def batches_of(data: Any, batch_size: int, pad_id: int = 0) -> Iterator[Any]:
    """Batches of ``batch_size`` samples of a sample collection, in order (`collate` each)."""
    for start in range(0, len(data), batch_size):
        stop = min(len(data), start + batch_size)
        if _is_hf_dataset(data):
            columns = data[start:stop]  # one columnar read: dict of lists
            samples = [{key: columns[key][i] for key in columns} for i in range(stop - start)]
        else:
            samples = [data[i] for i in range(start, stop)]
        yield collate(samples, pad_id)


def longest(data: Any) -> int | None:
    """The most tokens of any sample of a sample collection of token ids (None when its samples are not text)."""
    if _is_hf_dataset(data) and "input_ids" in data.column_names:
        return max((len(ids) for ids in data["input_ids"]), default=0)
    first = data[0]
    if not (isinstance(first, Mapping) and "input_ids" in first):
        return None
    return max(len(data[i]["input_ids"]) for i in range(len(data)))


def collate(samples: Sequence[Any], pad_id: int = 0) -> Any:
    """One batch from samples: dicts key by key, ``(inputs, label)`` tuples item by item, tensors stacked."""
    first = samples[0]
    if isinstance(first, Mapping):
        keys = [key for key in first if _is_tensor_like(first[key])]  # text columns and ids of strings are left out
        batch = {key: _stack([sample[key] for sample in samples], PAD_VALUES.get(key, pad_id), key) for key in keys}
        if "input_ids" in batch and "attention_mask" not in batch:
            lengths = torch.tensor([len(sample["input_ids"]) for sample in samples])
            batch["attention_mask"] = (torch.arange(batch["input_ids"].shape[1]) < lengths[:, None]).long()
        if not batch:
            raise InputError(f"the samples have no numeric fields (keys {sorted(first)}); tokenise the text first, for "
                             "example dataset.map(lambda s: tokenizer(s['text']))")
        return batch
    if isinstance(first, tuple | list):
        return tuple(collate([sample[i] for sample in samples], pad_id) for i in range(len(first)))
    return _stack(samples, pad_id, "inputs")


def _is_tensor_like(value: Any) -> bool:
    if isinstance(value, torch.Tensor | np.ndarray | int | float | bool | np.number):
        return True
    return isinstance(value, list) and bool(value) and isinstance(value[0], int | float | list)


def _stack(values: Sequence[Any], pad: int, key: str) -> torch.Tensor:
    """Stack equal-shaped values; pad 1-D sequences of different lengths on the right with ``pad``."""
    tensors = [torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v for v in values]
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) == 1:
        return torch.stack(tensors)
    if {len(shape) for shape in shapes} != {1}:
        raise InputError(f"the samples' {key!r} have different shapes {sorted(shapes)[:3]}; only token sequences "
                         "(1-D) are padded to a batch; resize the others to one shape")
    out = torch.full((len(tensors), max(len(t) for t in tensors)), pad, dtype=tensors[0].dtype)
    for row, tensor in enumerate(tensors):
        out[row, : len(tensor)] = tensor
    return out
