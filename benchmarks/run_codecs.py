"""Run codecs: bytes on disk and write / read time of each kind of array a capture stores, per codec.

Captures two real-shape runs (a Llama-style pair at 1,024 tokens, vocab 32k, ``attentions=False``; a BERT-style pair
at 128 tokens with attentions), then re-encodes every stored array with each candidate codec, timing writes and
reads interleaved, and reports bytes and seconds per array kind against storing it raw (the baseline, no
compression). The capture's defaults (`kdviz.store.format.codecs_for`) were chosen from this table.

    python benchmarks/run_codecs.py [--sequences 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result
from llm_capture import llama_pair, token_batches

import kdviz

CODECS = {
    "raw": lambda dtype: [],
    "zstd-0": lambda dtype: [ZstdCodec(level=0)],
    "blosc-lz4-bitshuffle": lambda dtype: [BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle", typesize=dtype.itemsize)],
    "blosc-zstd1-bitshuffle": lambda dtype: [BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle", typesize=dtype.itemsize)],
    "blosc-zstd1-shuffle": lambda dtype: [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle", typesize=dtype.itemsize)],
}


def kind(key: str) -> str:
    """The array family of a key: ``teacher/attn/3`` → ``attn``, ``pair/tokens/kl`` → ``tokens/kl``."""
    parts = key.split("/")
    if parts[0] in ("teacher", "student"):
        parts = parts[1:]
    if parts[0] in ("attn", "feat", "feat_summary", "spatial"):
        return parts[0]
    return "/".join(parts)


def bert_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    common = {"vocab_size": 30522, "num_labels": 2, "attn_implementation": "eager"}
    teacher = BertForSequenceClassification(BertConfig(num_hidden_layers=4, hidden_size=256, num_attention_heads=4,
                                                       intermediate_size=1024, **common)).eval()
    student = BertForSequenceClassification(BertConfig(num_hidden_layers=2, hidden_size=128, num_attention_heads=2,
                                                       intermediate_size=512, **common)).eval()
    return teacher, student


def captured_arrays(workdir: Path, sequences: int) -> dict[str, np.ndarray]:
    """Every array of the two captured runs, read into memory, keyed ``llm:<key>`` and ``bert:<key>``."""
    arrays = {}
    teacher, student = llama_pair(32000)
    llm = kdviz.capture(teacher, student, token_batches(32000, sequences), attentions=False, batch_size=4,
                        path=workdir / "llm.kdviz", progress=False, device="cpu")
    teacher, student = bert_pair()
    ids = torch.randint(1000, 30000, (4 * sequences, 128), generator=torch.Generator().manual_seed(0))
    bert = kdviz.capture(teacher, student, {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                         path=workdir / "bert.kdviz", progress=False, device="cpu")
    for name, run in (("llm", llm), ("bert", bert)):
        for key in run.array_keys():
            arrays[f"{name}:{key}"] = run.array(key)[:]
    return arrays


def encode(root: zarr.Group, key: str, values: np.ndarray, codec: str) -> tuple[float, float, int]:
    """(write seconds, read seconds, bytes) of one array under one codec, in whole-sample ~2 MB chunks."""
    rows = min(len(values), max(1, (2 << 20) // max(1, values[0].nbytes)))  # no padded chunk: the codec alone is measured
    start = time.perf_counter()
    array = root.create_array(key, shape=values.shape, dtype=values.dtype, chunks=(rows, *values.shape[1:]),
                              compressors=CODECS[codec](values.dtype), config={"write_empty_chunks": True})
    array[:] = values
    written = time.perf_counter() - start
    start = time.perf_counter()
    np.asarray(array[:])
    read = time.perf_counter() - start
    return written, read, array.nbytes_stored()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="kdviz-codecs-"))
    try:
        arrays = captured_arrays(workdir, args.sequences)
        table: dict[str, dict[str, dict[str, float]]] = {}
        for repeat in range(args.repeats):
            for codec in CODECS:  # codecs interleaved within each repeat
                root = zarr.open_group(str(workdir / f"{codec}-{repeat}.zarr"), mode="w", zarr_format=3)
                for key, values in arrays.items():
                    written, read, stored = encode(root, key.replace(":", "/"), values, codec)
                    family = f"{key.split(':')[0]}:{kind(key.split(':')[1])}:{values.dtype}"
                    cell = table.setdefault(family, {}).setdefault(codec, {"raw_bytes": 0, "bytes": 0, "write": [], "read": []})
                    if repeat == 0:
                        cell["raw_bytes"] += values.nbytes
                        cell["bytes"] += stored
                    if len(cell["write"]) <= repeat:
                        cell["write"].append(0.0)
                        cell["read"].append(0.0)
                    cell["write"][repeat] += written
                    cell["read"][repeat] += read
                shutil.rmtree(workdir / f"{codec}-{repeat}.zarr")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{'array kind':34s} {'codec':24s} {'size':>8s} {'write':>8s} {'read':>8s}   (stored ÷ data bytes; times ÷ raw; MB of data)")
    summary = {}
    for family, codecs in sorted(table.items(), key=lambda item: -item[1]["raw"]["raw_bytes"]):
        raw = codecs["raw"]
        for codec, cell in codecs.items():
            write, read = float(np.median(cell["write"])), float(np.median(cell["read"]))
            row = {"bytes": cell["bytes"], "raw_bytes": cell["raw_bytes"], "write_s": write, "read_s": read,
                   "size_ratio": cell["bytes"] / cell["raw_bytes"], "write_ratio": write / float(np.median(raw["write"])),
                   "read_ratio": read / float(np.median(raw["read"]))}
            summary.setdefault(family, {})[codec] = row
            print(f"{family:34s} {codec:24s} {row['size_ratio']:7.3f}× {row['write_ratio']:7.2f}× {row['read_ratio']:7.2f}×"
                  f"   {cell['raw_bytes'] / 1e6:8.2f}")
    path = write_result("run_codecs", {"sequences": args.sequences, "repeats": args.repeats, "table": summary})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
