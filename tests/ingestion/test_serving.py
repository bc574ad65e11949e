"""/documents/<id>/file decides inline or download, and the type, from the file's bytes only:
a stored page that claims to be a PDF (by name) or HTML (by remote MIME type) never renders."""

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from ingestion.models import Document, DocumentStatus
from ingestion.serving import safe_filename, serving_for
from tests.conftest import FIXTURES

pytestmark = pytest.mark.django_db

HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 40
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


@pytest.fixture
def owner_client(client, make_user, make_kb, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    owner = make_user("olga")
    client.force_login(owner)
    client.kb = make_kb(owner, "files")
    return client


def _stored(kb, *, name: str, mime: str, content: bytes) -> Document:
    document = Document.objects.create(
        knowledge_base=kb,
        original_name=name,
        mime_type=mime,
        content_hash=str(abs(hash(content))).ljust(64, "0"),
        status=DocumentStatus.READY,
        size=len(content),
    )
    document.file.save(name, ContentFile(content))
    return document


def _get(client, document):
    response = client.get(reverse("document_file", args=[document.pk]))
    assert response.status_code == 200
    response.body = b"".join(response.streaming_content)
    return response


def _assert_inert_download(response):
    assert response["Content-Disposition"].startswith("attachment")
    assert "html" not in response["Content-Type"]
    assert "svg" not in response["Content-Type"]
    assert response["Content-Security-Policy"] == "sandbox"
    assert response["X-Content-Type-Options"] == "nosniff"


def test_html_named_pdf_with_html_mime_type_is_an_inert_download(owner_client):
    document = _stored(owner_client.kb, name="x.pdf", mime="text/html", content=HTML)
    response = _get(owner_client, document)
    _assert_inert_download(response)
    assert response.body == HTML


def test_real_pdf_is_inline_application_pdf_without_sandbox(owner_client):
    pdf = (FIXTURES / "libtasn1.pdf").read_bytes()
    document = _stored(owner_client.kb, name="manual", mime="text/html", content=pdf)
    response = _get(owner_client, document)
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"].startswith("inline")
    assert "Content-Security-Policy" not in response
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response.body == pdf


def test_png_named_pdf_is_inline_image_png(owner_client):
    document = _stored(owner_client.kb, name="scan.pdf", mime="application/pdf", content=PNG)
    response = _get(owner_client, document)
    assert response["Content-Type"] == "image/png"
    assert response["Content-Disposition"].startswith("inline")
    assert response["X-Content-Type-Options"] == "nosniff"


def test_svg_with_script_named_png_is_an_inert_download(owner_client):
    document = _stored(owner_client.kb, name="logo.png", mime="image/svg+xml", content=SVG)
    _assert_inert_download(_get(owner_client, document))


def test_text_file_is_a_plain_text_download_not_html(owner_client):
    document = _stored(
        owner_client.kb, name="notes.txt", mime="text/plain", content="<b>注意</b>\n".encode()
    )
    response = _get(owner_client, document)
    _assert_inert_download(response)
    assert response["Content-Type"] == "text/plain; charset=utf-8"


def test_download_name_cannot_break_the_header(owner_client):
    document = _stored(
        owner_client.kb, name="page.html", mime="text/html", content=b"\x00\x01binary"
    )
    Document.objects.filter(pk=document.pk).update(original_name='a"\r\nSet-Cookie: x=1/..\\b.html')
    response = _get(owner_client, document)
    _assert_inert_download(response)
    assert response["Content-Type"] == "application/octet-stream"
    assert "\n" not in response["Content-Disposition"]
    assert "Set-Cookie" not in {k.title() for k in response.headers}


def test_serving_for_decides_on_magic_bytes():
    assert serving_for(b"%PDF-1.7\n").inline
    assert serving_for(b"GIF89a....").content_type == "image/gif"
    assert serving_for(b"\xff\xd8\xff\xe0").content_type == "image/jpeg"
    assert serving_for(b"RIFF\x00\x00\x00\x00WEBPVP8 ").content_type == "image/webp"
    assert not serving_for(SVG).inline
    assert not serving_for(HTML).inline
    assert serving_for("中文".encode()[:-1]).content_type.startswith("text/plain")
    assert safe_filename("../\x00../etc") == "_.._etc"
    assert safe_filename("\r\n") == "document"
