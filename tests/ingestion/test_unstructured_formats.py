import pypandoc
import pytest

from ingestion.parsing import ParseError, parse_file

MARKDOWN = """# Backup

Use pg_dump to back up a database.

## Restore

| option | meaning |
|---|---|
| -C | create the database |

- psql reads the script back
"""


@pytest.mark.slow  # unstructured and pandoc: about 2 s per format
@pytest.mark.parametrize("fmt", ["odt", "rtf"])
def test_odt_and_rtf_through_unstructured(tmp_path, fmt):
    path = tmp_path / f"manual.{fmt}"
    pypandoc.convert_text(MARKDOWN, fmt, format="md", outputfile=str(path), extra_args=["-s"])
    doc = parse_file(path, filename=path.name)
    by_kind = {s.kind: s for s in doc.sections}
    assert by_kind["text"].heading_path == ("Backup",)
    assert by_kind["table"].table_header == "option | meaning"
    assert by_kind["table"].heading_path == ("Backup", "Restore")
    assert "psql" in by_kind["list"].text


def test_broken_odt_fails_clearly(tmp_path):
    import zipfile

    path = tmp_path / "broken.odt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        z.writestr("content.xml", "<not really")
    with pytest.raises(ParseError, match="ODT"):
        parse_file(path, filename=path.name)
