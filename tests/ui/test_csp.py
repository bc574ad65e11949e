"""The site's Content-Security-Policy blocks nothing the site itself needs: Django's admin, the
API docs and the light pages, in real Chromium, without the models or a worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse

from tests.ui.conftest import CHROMIUM

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing"),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_admin_api_docs_and_pages_run_under_the_policy(
    live_server, browser, csp_violations, make_user, make_kb
):
    from ingestion.models import Chunk, Document, DocumentStatus, Membership, Role

    root = make_user("root", is_staff=True, is_superuser=True)
    kb = make_kb(make_user("olga"), "manuals")
    Membership.objects.create(knowledge_base=kb, user=root, role=Role.VIEWER)
    doc = Document.objects.create(
        knowledge_base=kb,
        original_name="<script>alert(1)</script>.txt",
        content_hash="c" * 64,
        status=DocumentStatus.READY,
    )
    Chunk.objects.create(
        document=doc, knowledge_base=kb, ordinal=0, text="<img src=x onerror=alert(1)>"
    )
    context = browser.new_context(locale="en-US")
    violations = csp_violations(context)
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    url = live_server.url

    page.goto(url + reverse("login"))
    page.fill("#id_username", "root")
    page.fill("#id_password", "pw-Test-1234")
    page.click("main button[type=submit]")
    page.wait_for_url(url + "/kb/")
    for path in [
        reverse("admin:index"),
        reverse("admin:ingestion_document_changelist"),
        reverse("admin:ingestion_document_change", args=[doc.pk]),
        reverse("admin:ingestion_knowledgebase_add"),
        reverse("admin:ragapp_user_change", args=[root.pk]),
        "/api/v1/docs",
        reverse("dashboard"),
        reverse("kb_dashboard", args=[kb.pk]),
        reverse("document_view", args=[doc.pk]),
        reverse("api_tokens"),
    ]:
        response = page.goto(url + path)
        assert response.ok, path
        page.wait_for_load_state("networkidle")
        if path.startswith("/admin/"):
            assert response.headers["content-security-policy"], path
    # The API docs really rendered (their scripts ran).
    page.goto(url + "/api/v1/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
    # The admin's own scripts ran: the "select all" checkbox works.
    page.goto(url + reverse("admin:ingestion_document_changelist"))
    page.check("#action-toggle")
    assert page.is_checked("input.action-select")
    assert not violations, violations
    assert not errors, errors

    # And the recorder does see a violation: an inline style attribute is refused.
    page.evaluate("document.body.setAttribute('style', 'color: red')")
    page.wait_for_timeout(200)
    assert any("style-src" in v for v in violations), violations
    context.close()
