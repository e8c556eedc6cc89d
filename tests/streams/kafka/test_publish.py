"""Feed files: JSONL goes out byte for byte, CSV rows become JSON, text lines are items."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.kafka.publish import read_feed


def test_jsonl_lines_are_sent_verbatim_with_id_keys(tmp_path: Path) -> None:
    feed = tmp_path / "feed.jsonl"
    feed.write_bytes(b'{"id": "a", "text": "one"}\n\n{broken\n{"text": "no id"}\n')
    records = list(read_feed(feed))
    assert records == [
        (b"a", b'{"id": "a", "text": "one"}'),
        (None, b"{broken"),
        (None, b'{"text": "no id"}'),
    ]


def test_csv_rows_become_objects_with_meta(tmp_path: Path) -> None:
    feed = tmp_path / "feed.csv"
    feed.write_text("id,text,source,ticker\n1,Shares jump,wire,ACME\n2,Rain delays final,,\n")
    records = list(read_feed(feed))
    assert [k for k, _ in records] == [b"1", b"2"]
    first = json.loads(records[0][1])
    assert first == {"id": "1", "text": "Shares jump", "source": "wire", "meta": {"ticker": "ACME"}}
    assert json.loads(records[1][1]) == {"id": "2", "text": "Rain delays final"}


def test_csv_without_text_column_is_a_clear_error(tmp_path: Path) -> None:
    feed = tmp_path / "feed.csv"
    feed.write_text("id,body\n1,x\n")
    with pytest.raises(ValueError, match="'text' column"):
        list(read_feed(feed))


def test_plain_text_lines(tmp_path: Path) -> None:
    feed = tmp_path / "feed.txt"
    feed.write_text("first headline\n\nsecond headline\n")
    assert list(read_feed(feed)) == [(None, b"first headline"), (None, b"second headline")]
