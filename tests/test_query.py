"""The dashboard's URL query is parsed strictly: exact values are taken, anything else is ignored and never raises."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kdviz.app.query import MAX_VALUE_BYTES, Query, parse_query

RUNS = ["digits-cnn", "charlm"]
PAGES = ["Overview", "Logits", "Attention"]


def parse(**values: bytes) -> Query:
    return parse_query({key: [value] for key, value in values.items()}, runs=RUNS, pages=PAGES)


def test_exact_values_are_taken():
    assert parse(run=b"charlm", sample=b"17", step=b"00000120", page=b"logits") == Query("charlm", 17, 120, "Logits")
    assert parse(page=b"ATTENTION").page == "Attention"
    assert parse_query(None, runs=RUNS, pages=PAGES) == Query()
    assert parse(present=b"1").present is True and parse(present=b"0").present is False


def test_presentation_mode_is_asked_for_with_1_or_0_only():
    for value in (b"yes", b"true", b"2", b"01", b" 1", b"", b"\xff"):
        assert parse(present=value).present is None, value


def test_values_that_only_look_valid_are_ignored():
    # '²' and '٣' are str.isdigit() but int() refuses the first; full-width digits would be converted by int()
    for sample in ("²", "٣", "１２", "-1", "+3", " 3", "3 ", "1e3", "0x10", "3.0", "9" * 10, ""):
        assert parse(sample=sample.encode()).sample is None, sample
    for run in (b"../digits-cnn", b"digits-cnn/", b"/etc/passwd", b"DIGITS-CNN", b"digits-cnn\x00"):
        assert parse(run=run).run is None, run
    assert parse(run=b"\xff\xfe").run is None  # not UTF-8
    assert parse(page=b"logits" + b" " * MAX_VALUE_BYTES).page is None
    assert parse_query({"sample": []}, runs=RUNS, pages=PAGES).sample is None


@given(st.dictionaries(st.sampled_from(["run", "sample", "step", "page", "present", "x"]), st.lists(st.binary(max_size=300), max_size=3)))
def test_arbitrary_bytes_never_raise(args):
    query = parse_query(args, runs=RUNS, pages=PAGES)
    assert query.run in (None, *RUNS) and query.page in (None, *PAGES)
    assert query.sample is None or 0 <= query.sample < 10**9
    assert query.present in (None, True, False)
