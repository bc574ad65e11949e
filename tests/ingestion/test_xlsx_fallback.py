"""XLSX has two readers: the fast lxml one, and openpyxl when the fast one fails."""

import logging
from pathlib import Path

from ingestion.parsers import sheets
from ingestion.parsing import parse_file

FIX = Path(__file__).resolve().parent.parent / "fixtures"


def test_openpyxl_reads_a_workbook_the_fast_reader_fails_on(monkeypatch, caplog):
    fast = parse_file(FIX / "deaths.xlsx", filename="deaths.xlsx")

    def unexpected(*args, **kwargs):
        raise KeyError("a part the fast reader does not know")

    monkeypatch.setattr(sheets, "_fast_xlsx", unexpected)
    with caplog.at_level(logging.WARNING, logger=sheets.__name__):
        fallback = parse_file(FIX / "deaths.xlsx", filename="deaths.xlsx")
    assert "reading with openpyxl" in caplog.text  # not silent
    assert fallback.page_count == fast.page_count == 2
    tables = [s for s in fallback.sections if s.kind == "table"]
    assert [t.sheet for t in tables] == ["arts", "other"]
    assert tables[0].table_rows[0] == "David Bowie | musician | 69 | TRUE | 1947-01-08 | 2016-01-10"
    assert [s.text for s in fallback.sections] == [s.text for s in fast.sections]
