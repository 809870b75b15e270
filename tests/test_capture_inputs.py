"""The forms of data capture takes besides tensors: dynamic padding (batches of different lengths, through a real
``DataCollatorWithPadding`` and a tokenizer built in memory), a Hugging Face ``datasets.Dataset``, a list of
per-sample dicts and a ``torch.utils.data.Dataset``. Each is checked against a capture of the same samples padded
to one length, which is what the models would see without kdviz's batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import bert_pair, gpt2_pair

import kdviz
from kdviz.errors import InputError

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(4, 120)]


def tokenizer():
    """A real fast tokenizer (word level, 120 ids) built in memory: nothing is downloaded."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({word: i for i, word in enumerate(VOCAB)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]")


def sentences(n: int = 11, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(f"w{w}" for w in rng.integers(4, 120, size=rng.integers(3, 20))) for _ in range(n)]


def encoded(n: int = 11) -> list[dict]:
    tok = tokenizer()
    rng = np.random.default_rng(1)
    return [{**tok(text), "label": int(rng.integers(0, 3))} for text in sentences(n)]


def fixed_padding(samples: list[dict]) -> dict[str, torch.Tensor]:
    """The same samples padded on the right to the longest, as one dict of tensors."""
    longest = max(len(s["input_ids"]) for s in samples)
    ids = torch.zeros(len(samples), longest, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, sample in enumerate(samples):
        ids[row, : len(sample["input_ids"])] = torch.tensor(sample["input_ids"])
        mask[row, : len(sample["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([s["label"] for s in samples])}


def assert_same_run(run, reference) -> None:
    assert run.n_samples == reference.n_samples
    np.testing.assert_array_equal(run.token_ids[:], reference.token_ids[:])
    np.testing.assert_array_equal(run.attention_mask[:], reference.attention_mask[:])
    np.testing.assert_array_equal(run.labels[:], reference.labels[:])
    for side, ref in ((run.teacher, reference.teacher), (run.student, reference.student)):
        np.testing.assert_allclose(side.logits[:], ref.logits[:], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(side.features("hidden.2")[:], ref.features("hidden.2")[:], rtol=1e-4, atol=1e-5)
        real = reference.attention_mask[:].astype(bool)
        for layer in range(len(side.heads)):
            got, want = side.attention(layer)[:], ref.attention(layer)[:]
            for i in range(run.n_samples):  # equal over the real tokens; padding attends nowhere in both
                keep = np.flatnonzero(real[i])
                np.testing.assert_allclose(got[i][:, keep][:, :, keep], want[i][:, keep][:, :, keep], atol=2e-3)


def test_dynamic_padding_through_a_data_collator_is_stored_at_the_longest_batch(tmp_path):
    from transformers import DataCollatorWithPadding

    samples = encoded()
    collator = DataCollatorWithPadding(tokenizer())
    loader = torch.utils.data.DataLoader(samples, batch_size=4, collate_fn=collator)
    lengths = {batch["input_ids"].shape[1] for batch in loader}
    assert len(lengths) > 1  # the batches really differ in length
    teacher, student = bert_pair()
    run = kdviz.capture(teacher, student, loader, path=tmp_path / "dyn.kdviz", progress=False, tokenizer=tokenizer())
    reference = kdviz.capture(teacher, student, fixed_padding(samples), path=tmp_path / "fixed.kdviz", progress=False)
    assert run.meta["inputs"]["seq_len"] == max(len(s["input_ids"]) for s in samples)
    assert_same_run(run, reference)
    assert all(len(row) == run.meta["inputs"]["seq_len"] for row in run.tokens)
    assert run.tokens[0][0] == "[CLS]"


def test_a_language_model_run_from_batches_of_different_lengths_masks_the_padding(tmp_path):
    teacher, student = gpt2_pair()
    rng = np.random.default_rng(3)
    batches = []
    for length in (5, 9, 7):
        ids = torch.tensor(rng.integers(1, 50, size=(3, length)))
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    run = kdviz.capture(teacher, student, batches, path=tmp_path / "lm.kdviz", progress=False, attentions=False)
    labels, mask = run.labels[:], run.attention_mask[:]
    assert labels.shape == (9, 9) and mask[:3, 5:].sum() == 0
    assert np.all(labels[:3, 4:] == -100)  # the last real token and the padding have no next-token target
    np.testing.assert_array_equal(labels[3:6, :8], run.token_ids[3:6, 1:])
    alone = kdviz.capture(teacher, student, batches[0], path=tmp_path / "one.kdviz", progress=False, attentions=False)
    np.testing.assert_allclose(run.pair_token_stat("kl")[:3, :5], alone.pair_token_stat("kl")[:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run.teacher.token("tail_mass")[:3, :5], alone.teacher.token("tail_mass")[:], atol=1e-6)


def test_a_one_shot_iterator_of_growing_batches_asks_for_max_length(tmp_path):
    teacher, student = gpt2_pair()
    batches = [{"input_ids": torch.randint(1, 50, (2, length))} for length in (4, 8)]
    with pytest.raises(InputError, match="pass max_length="):
        kdviz.capture(teacher, student, iter(batches), path=tmp_path / "a.kdviz", progress=False, attentions=False)
    run = kdviz.capture(teacher, student, iter(batches), path=tmp_path / "b.kdviz", progress=False, attentions=False,
                        max_length=8)
    assert run.token_ids.shape == (4, 8)
    with pytest.raises(InputError, match="max_length must be a positive"):
        kdviz.capture(teacher, student, batches, path=tmp_path / "c.kdviz", progress=False, max_length=0)


def test_a_hugging_face_dataset_built_in_memory(tmp_path):
    import datasets

    samples = encoded(9)
    table = datasets.Dataset.from_dict({"text": sentences(9), **{key: [s[key] for s in samples]
                                                                   for key in ("input_ids", "attention_mask", "label")}})
    teacher, student = bert_pair()
    run = kdviz.capture(teacher, student, table, batch_size=4, path=tmp_path / "hf.kdviz", progress=False)
    reference = kdviz.capture(teacher, student, fixed_padding(samples), path=tmp_path / "fixed.kdviz", progress=False)
    assert_same_run(run, reference)
    torch_format = kdviz.capture(teacher, student, table.with_format("torch"), batch_size=4, progress=False,
                                 path=tmp_path / "hf-torch.kdviz")
    assert_same_run(torch_format, reference)


def test_a_list_of_per_sample_dicts_is_batched_and_padded(tmp_path):
    samples = encoded(7)
    teacher, student = bert_pair()
    run = kdviz.capture(teacher, student, samples, batch_size=3, path=tmp_path / "list.kdviz", progress=False)
    reference = kdviz.capture(teacher, student, fixed_padding(samples), path=tmp_path / "fixed.kdviz", progress=False)
    assert_same_run(run, reference)
    for text_only in ([{"text": "w5 w6"}], [{"input_ids": "w5 w6"}]):  # text, not token ids
        with pytest.raises(InputError, match="tokenise"):
            kdviz.capture(teacher, student, text_only, path=tmp_path / "text.kdviz", progress=False)


class Images(torch.utils.data.Dataset):
    """A map-style torch Dataset of (image [1, 8, 8], label) pairs."""

    def __init__(self, n: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 1, 8, 8, generator=generator), torch.randint(0, 3, (n,), generator=generator)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.x[index], int(self.y[index])


def test_a_torch_dataset_is_batched_in_order(tmp_path, cnn_pair):
    teacher, student = cnn_pair
    dataset = Images(10)
    run = kdviz.capture(teacher, student, dataset, batch_size=4, path=tmp_path / "ds.kdviz", progress=False)
    reference = kdviz.capture(teacher, student, (dataset.x, dataset.y), path=tmp_path / "t.kdviz", progress=False)
    np.testing.assert_array_equal(run.labels[:], dataset.y.numpy())
    np.testing.assert_allclose(run.teacher.logits[:], reference.teacher.logits[:], rtol=1e-5, atol=1e-6)


def test_token_ids_beyond_a_models_embedding_are_refused_with_the_model_and_the_id(tmp_path):
    """Ids the model has no embedding row for (a text tokenized for a model with a larger vocabulary): an InputError
    that names the model, the id, the sample and the fix, before the model fails with a bare IndexError."""
    teacher, student = gpt2_pair(vocab=30)
    ids = torch.randint(0, 30, (6, 12), generator=torch.Generator().manual_seed(0))
    ids[4, 7] = 41
    with pytest.raises(InputError, match=r"the teacher \(GPT2LMHeadModel\) reads token ids 0…29, but sample 4 holds "
                                         r"id 41 at position 7; tokenize the text with the teacher's own tokenizer"):
        kdviz.capture(teacher, student, {"input_ids": ids}, path=tmp_path / "bad.kdviz", batch_size=2, progress=False)
    assert not (tmp_path / "bad.kdviz").exists()
    ids[4, 7] = 29  # the last row of the embedding
    run = kdviz.capture(teacher, student, {"input_ids": ids}, path=tmp_path / "ok.kdviz", batch_size=2, progress=False)
    assert run.n_samples == 6
    from kdviz.adapters.probe import ModelProbe

    probe = ModelProbe(student, "student", layers=None, attentions=False, device=torch.device("cpu"))
    with pytest.raises(InputError, match=r"the student .* holds id -3 at position 0"):
        probe.check_token_ids({"input_ids": torch.tensor([[-3, 1]])})


def test_a_student_whose_output_layer_is_padded_is_compared_over_the_tokenizers_ids(tmp_path):
    """Teacher 30 output rows, student 34 (padded past a 30-id tokenizer, as Qwen2's are): refused with the fix, then
    compared over the 30 real ids with vocab_size= or a tokenizer, and each model's padding mass stored per token."""
    from tokenizers import Tokenizer, models
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from kdviz.metrics.vocabulary import token_statistics

    teacher, _ = gpt2_pair(vocab=30)
    torch.manual_seed(1)
    student = GPT2LMHeadModel(GPT2Config(vocab_size=34, n_positions=32, n_layer=1, n_head=2, n_embd=16,
                                         bos_token_id=0, eos_token_id=0)).eval()
    with torch.no_grad():
        student.lm_head.weight[30:] *= 4  # padding rows with visible mass, so a wrong column would show
    ids = torch.randint(0, 30, (4, 10), generator=torch.Generator().manual_seed(0))
    with pytest.raises(InputError, match=r"teacher predicts over 30 token ids and the student over 34: .* pass "
                                         r"vocab_size= the tokenizer's real vocabulary"):
        kdviz.capture(teacher, student, {"input_ids": ids}, path=tmp_path / "refused.kdviz", progress=False)
    run = kdviz.capture(teacher, student, {"input_ids": ids}, path=tmp_path / "padded.kdviz", vocab_size=30,
                        batch_size=2, attentions=False, progress=False)
    assert run.meta["n_classes"] == 30 and run.meta["capture"]["vocab_size"] == 30
    assert "padding_mass" in run.student.token_stats
    teacher.eval()  # as capture runs it (dropout off)
    with torch.no_grad():
        z_t, z_s = teacher(input_ids=ids).logits.double(), student(input_ids=ids).logits.double()
    expected_pad = torch.softmax(z_s, -1)[..., 30:].sum(-1).numpy()
    np.testing.assert_allclose(run.student.token("padding_mass")[:], expected_pad, rtol=1e-4, atol=1e-7)
    assert expected_pad.mean() > 0.01  # the check above could fail
    np.testing.assert_array_equal(run.teacher.token("padding_mass")[:], 0.0)
    from kdviz.readers.logits import LogitData
    from kdviz.views.logits import summary_card

    summary = LogitData.from_run(run).summary()
    assert summary["student_padding_mass"] == pytest.approx(expected_pad.mean(), rel=1e-4)
    labels = summary_card(summary).data[0].cells.values[0]
    assert labels[-1].startswith("mass on padding ids") and not any("ECE" in label for label in labels)  # no data, no row
    direct = token_statistics(z_t.float(), z_s[..., :30].float(), None, 10)
    np.testing.assert_allclose(run.pair_token_stat("kl")[:], direct["kl"].numpy(), rtol=1e-4, atol=1e-6)
    vocabulary = Tokenizer(models.WordLevel({f"w{i}": i for i in range(30)}, unk_token="w0"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=vocabulary)
    by_tokenizer = kdviz.capture(teacher, student, {"input_ids": ids}, path=tmp_path / "tok.kdviz", tokenizer=tokenizer,
                                 batch_size=2, attentions=False, progress=False)
    assert by_tokenizer.meta["n_classes"] == 30 and len(by_tokenizer.meta["vocab"]) == 30
    np.testing.assert_allclose(by_tokenizer.pair_token_stat("kl")[:], run.pair_token_stat("kl")[:])
