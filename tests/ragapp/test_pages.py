"""Server-side page tests: every page renders, every POST form carries CSRF, knowledge is
scoped by membership (another user's pages are 404), the Chinese translation is served."""

import re

import pytest
from django.contrib import admin
from django.core.cache import cache
from django.urls import reverse

from chat.models import Conversation, Feedback, Message, Mode
from ingestion.models import Chunk, Document, DocumentStatus, KnowledgeBase, Membership, Role

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def kb(alice, make_kb):
    kb = make_kb(alice, "manuals", description="PostgreSQL notes")
    doc = Document.objects.create(
        knowledge_base=kb,
        original_name="guide.pdf",
        content_hash="a" * 64,
        status=DocumentStatus.READY,
        size=2048,
        page_count=3,
    )
    Chunk.objects.create(
        document=doc, knowledge_base=kb, ordinal=0, text="VACUUM reclaims.", page=2
    )
    Document.objects.create(
        knowledge_base=kb,
        original_name="broken.docx",
        content_hash="b" * 64,
        status=DocumentStatus.FAILED,
        error="could not parse: truncated zip",
    )
    return kb


@pytest.fixture
def conversation(alice, kb):
    conv = Conversation.objects.create(user=alice, title="vacuum?")
    conv.knowledge_bases.set([kb])
    Message.objects.create(conversation=conv, role="user", content="What does VACUUM do?")
    answer = Message.objects.create(
        conversation=conv,
        role="assistant",
        question="What does VACUUM do?",
        content="VACUUM reclaims storage [1].",
        mode=Mode.EXTRACTIVE,
        timings={"condense": 1, "recall": 40, "rerank": 80, "first_token": 130, "total": 150},
    )
    for _ in range(2):
        Message.objects.create(
            conversation=conv,
            role="assistant",
            question="Who wrote the manual?",
            mode=Mode.ABSTAINED,
            timings={"recall": 30, "rerank": 60, "total": 100},
        )
    Feedback.objects.create(message=answer, user=alice, rating=1)
    return conv


def owner_pages(kb, conversation):
    doc = kb.documents.get(original_name="guide.pdf")
    return [
        reverse("kb_list"),
        reverse("kb_detail", args=[kb.pk]),
        reverse("kb_members", args=[kb.pk]),
        reverse("kb_settings", args=[kb.pk]),
        reverse("kb_delete", args=[kb.pk]),
        reverse("hit_test", args=[kb.pk]),
        reverse("kb_dashboard", args=[kb.pk]),
        reverse("dashboard"),
        reverse("chat"),
        reverse("chat_conversation", args=[conversation.pk]),
        reverse("document_view", args=[doc.pk]),
        reverse("password_change"),
    ]


def assert_post_forms_have_csrf(html: str, url: str):
    forms = re.findall(r"<form\b[^>]*>.*?</form>", html, flags=re.S | re.I)
    post_forms = [f for f in forms if re.search(r'method="post"', f, flags=re.I)]
    for form in post_forms:
        assert "csrfmiddlewaretoken" in form, f"{url}: POST form without CSRF: {form[:200]}"
    return len(post_forms)


def test_every_page_renders_and_every_post_form_has_csrf(client, alice, kb, conversation):
    client.force_login(alice)
    n_forms = 0
    for url in owner_pages(kb, conversation):
        response = client.get(url)
        assert response.status_code == 200, url
        n_forms += assert_post_forms_have_csrf(response.content.decode(), url)
    assert n_forms > 10
    client.logout()
    for url in (reverse("login"), reverse("signup"), reverse("password_reset")):
        response = client.get(url)
        assert response.status_code == 200
        assert assert_post_forms_have_csrf(response.content.decode(), url) >= 1


def test_another_users_knowledge_base_document_conversation_and_source_are_404(
    client, make_user, kb, conversation
):
    doc = kb.documents.get(original_name="guide.pdf")
    answer = conversation.messages.filter(role="assistant").first()
    mallory = make_user("mallory")
    client.force_login(mallory)
    gets = [
        reverse("kb_detail", args=[kb.pk]),
        reverse("kb_documents", args=[kb.pk]),
        reverse("kb_members", args=[kb.pk]),
        reverse("kb_settings", args=[kb.pk]),
        reverse("kb_delete", args=[kb.pk]),
        reverse("kb_dashboard", args=[kb.pk]),
        reverse("hit_test", args=[kb.pk]) + "?q=vacuum",
        reverse("document_view", args=[doc.pk]) + "?chunk=1#chunk-1",
        reverse("document_file", args=[doc.pk]) + "#page=2",
        reverse("chat_conversation", args=[conversation.pk]),
        reverse("conversation_json", args=[conversation.pk]),
    ]
    for url in gets:
        assert client.get(url).status_code == 404, url
    posts = [
        reverse("kb_upload", args=[kb.pk]),
        reverse("kb_delete", args=[kb.pk]),
        reverse("kb_thresholds", args=[kb.pk]),
        reverse("document_retry", args=[doc.pk]),
        reverse("document_delete", args=[doc.pk]),
        reverse("message_feedback", args=[answer.pk]),
        reverse("conversation_delete", args=[conversation.pk]),
    ]
    for url in posts:
        assert client.post(url, {"rating": 1}).status_code == 404, url
    assert KnowledgeBase.objects.filter(pk=kb.pk).exists()
    assert Document.objects.filter(pk=doc.pk).exists()
    assert Conversation.objects.filter(pk=conversation.pk).exists()
    # The other user's lists do not mention it either.
    assert "manuals" not in client.get(reverse("kb_list")).content.decode()
    assert "manuals" not in client.get(reverse("dashboard")).content.decode()
    assert "vacuum?" not in client.get(reverse("chat")).content.decode()


def test_viewer_reads_but_cannot_manage(client, make_user, kb):
    viewer = make_user("vera")
    Membership.objects.create(knowledge_base=kb, user=viewer, role=Role.VIEWER)
    client.force_login(viewer)
    assert client.get(reverse("kb_detail", args=[kb.pk])).status_code == 200
    assert client.get(reverse("hit_test", args=[kb.pk])).status_code == 200
    page = client.get(reverse("kb_members", args=[kb.pk]))
    assert page.status_code == 200 and "member-form" not in page.content.decode()
    # A member knows the knowledge base exists: owner-only pages say so instead of 404.
    for name in ("kb_settings", "kb_delete", "kb_dashboard"):
        assert client.get(reverse(name, args=[kb.pk])).status_code == 403, name
    response = client.post(
        reverse("kb_members", args=[kb.pk]), {"username": "vera", "role": "editor"}
    )
    assert response.status_code == 403
    assert Membership.objects.get(user=viewer).role == Role.VIEWER


def test_sign_up_logs_in_and_password_change(client):
    response = client.post(
        reverse("signup"),
        {"username": "newbie", "password1": "a-Long-pass-99", "password2": "a-Long-pass-99"},
    )
    assert response.status_code == 302 and response["Location"] == reverse("kb_list")
    assert client.get(reverse("kb_list")).status_code == 200
    response = client.post(
        reverse("password_change"),
        {
            "old_password": "a-Long-pass-99",
            "new_password1": "another-Pass-77",
            "new_password2": "another-Pass-77",
        },
    )
    assert response.status_code == 302
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("kb_list")).status_code == 302
    # Through the login page: django-axes needs the request that client.login() lacks.
    response = client.post(reverse("login"), {"username": "newbie", "password": "another-Pass-77"})
    assert response.status_code == 302 and "_auth_user_id" in client.session


@pytest.fixture
def fresh_reset_limits():
    cache.clear()  # the per-address reset counters live in the cache


def test_forgotten_password_is_reset_through_an_emailed_link(
    client, mailoutbox, fresh_reset_limits
):
    client.post(
        reverse("signup"),
        {
            "username": "forgetful",
            "email": "forgetful@example.com",
            "password1": "a-Long-pass-99",
            "password2": "a-Long-pass-99",
        },
    )
    client.post(reverse("logout"))
    assert reverse("password_reset") in client.get(reverse("login")).content.decode()

    # An unknown address looks the same from outside (no account probing) and sends nothing.
    response = client.post(reverse("password_reset"), {"email": "nobody@example.com"})
    assert response.status_code == 302 and response["Location"] == reverse("password_reset_done")
    assert mailoutbox == []
    response = client.post(reverse("password_reset"), {"email": "FORGETFUL@example.com"})
    assert response["Location"] == reverse("password_reset_done")
    assert len(mailoutbox) == 1 and mailoutbox[0].to == ["forgetful@example.com"]
    assert '"forgetful"' in mailoutbox[0].body and "\n" not in mailoutbox[0].subject
    link = re.search(r"https?://[^/]+(/\S+)", mailoutbox[0].body).group(1)

    form_page = client.get(link, follow=True)
    assert form_page.status_code == 200 and form_page.context["validlink"]
    response = client.post(
        form_page.redirect_chain[-1][0],
        {"new_password1": "brand-New-pass-42", "new_password2": "brand-New-pass-42"},
    )
    assert response["Location"] == reverse("password_reset_complete")
    # Through the login page: django-axes needs the request that client.login() lacks.
    response = client.post(
        reverse("login"), {"username": "forgetful", "password": "brand-New-pass-42"}
    )
    assert response.status_code == 302 and "_auth_user_id" in client.session
    client.logout()
    used = client.get(link, follow=True)
    assert not used.context["validlink"] and "not valid" in used.content.decode()


def test_password_reset_mails_are_limited_per_address(
    client, make_user, mailoutbox, settings, fresh_reset_limits
):
    settings.RAG_PASSWORD_RESET_PER_HOUR = 2
    user = make_user("flooded")
    user.email = "flooded@example.com"
    user.save()
    for _ in range(4):
        response = client.post(reverse("password_reset"), {"email": "flooded@example.com"})
        assert response["Location"] == reverse("password_reset_done")  # looks the same
    assert len(mailoutbox) == 2


def test_create_rename_and_delete_with_confirmation(client, alice):
    client.force_login(alice)
    response = client.post(reverse("kb_list"), {"name": "drafts", "description": ""})
    kb = KnowledgeBase.objects.get(name="drafts")
    assert response["Location"] == reverse("kb_detail", args=[kb.pk])
    client.post(reverse("kb_settings", args=[kb.pk]), {"name": "final", "description": "x"})
    kb.refresh_from_db()
    assert kb.name == "final"
    confirm = client.get(reverse("kb_delete", args=[kb.pk]))
    assert "Delete this knowledge base?" in confirm.content.decode()
    assert KnowledgeBase.objects.filter(pk=kb.pk).exists()  # GET deletes nothing
    client.post(reverse("kb_delete", args=[kb.pk]))
    assert not KnowledgeBase.objects.filter(pk=kb.pk).exists()


def test_owner_adds_member_by_username_and_removes_them(client, alice, kb, make_user):
    bob = make_user("bob")
    client.force_login(alice)
    url = reverse("kb_members", args=[kb.pk])
    client.post(url, {"username": "bob", "role": "editor"})
    assert Membership.objects.get(knowledge_base=kb, user=bob).role == Role.EDITOR
    client.post(url, {"username": "bob", "role": "viewer"})  # changes the role
    membership = Membership.objects.get(knowledge_base=kb, user=bob)
    assert membership.role == Role.VIEWER
    page = client.post(url, {"username": "nobody", "role": "viewer"})
    assert "There is no user with this username." in page.content.decode()
    client.post(reverse("kb_member_remove", args=[kb.pk, membership.pk]))
    assert not Membership.objects.filter(pk=membership.pk).exists()
    # bob now has no access at all
    client.force_login(bob)
    assert client.get(reverse("kb_detail", args=[kb.pk])).status_code == 404


def test_language_switch_renders_chinese(client, alice, kb, conversation):
    client.force_login(alice)
    response = client.post(
        reverse("set_language"), {"language": "zh-hans", "next": reverse("kb_list")}
    )
    assert response.status_code == 302
    html = client.get(reverse("kb_list")).content.decode()
    assert '<html lang="zh-hans">' in html
    assert "知识库" in html and "新建知识库" in html
    assert "Knowledge bases" not in html
    dashboard = client.get(reverse("kb_dashboard", args=[kb.pk])).content.decode()
    assert "尚无评估" in dashboard
    client.post(reverse("set_language"), {"language": "en", "next": "/"})
    assert "Knowledge bases" in client.get(reverse("kb_list")).content.decode()


def test_kb_list_shows_counts_and_status_summary(client, alice, kb):
    client.force_login(alice)
    html = client.get(reverse("kb_list")).content.decode()
    row = html[html.index("manuals") :]
    assert re.search(r"<td>2</td><td>1</td>", row)  # documents, chunks
    assert "Ready 1" in row and "Failed 1" in row


def test_dashboard_shows_statistics_charts_gaps_and_failures(client, alice, kb, conversation):
    client.force_login(alice)
    html = client.get(reverse("kb_dashboard", args=[kb.pk])).content.decode()
    assert html.count("<svg") >= 5
    assert 'id="stat-questions">3<' in html
    assert "67%" in html  # two of three answers abstained
    assert "Who wrote the manual?" in html and "×2" in html
    assert "could not parse: truncated zip" in html
    assert "No evaluation yet." in html
    assert "👍 1 · 👎 0" in html
    kb.last_evaluation = {"metrics": {"recall@5": 0.8, "mrr@10": 0.61}, "pairs": 40}
    kb.save()
    html = client.get(reverse("kb_dashboard", args=[kb.pk])).content.decode()
    assert "No evaluation yet." not in html and "recall@5" in html and "0.610" in html


def test_retry_from_the_dashboard_returns_to_it(client, alice, kb):
    client.force_login(alice)
    failed = kb.documents.get(status=DocumentStatus.FAILED)
    back = reverse("kb_dashboard", args=[kb.pk])
    response = client.post(reverse("document_retry", args=[failed.pk]), {"next": back})
    assert response["Location"] == back
    failed.refresh_from_db()
    assert failed.status == DocumentStatus.QUEUED and failed.error == ""
    evil = client.post(reverse("document_retry", args=[failed.pk]), {"next": "https://evil.test/"})
    assert evil["Location"] == reverse("kb_detail", args=[kb.pk])


def test_site_dashboard_is_site_wide_for_staff_only(client, alice, kb, conversation, make_user):
    staff = make_user("root", is_staff=True)
    client.force_login(staff)
    html = client.get(reverse("dashboard")).content.decode()
    assert 'id="stat-documents">2<' in html
    client.force_login(make_user("carol"))
    html = client.get(reverse("dashboard")).content.decode()
    assert 'id="stat-documents">0<' in html


def test_owner_saves_thresholds(client, alice, kb):
    client.force_login(alice)
    url = reverse("kb_thresholds", args=[kb.pk])
    client.post(url, {"rerank_top_k": 5, "rerank_min_score": "0.2", "rerank_max_drop": "0.5"})
    kb.refresh_from_db()
    assert (kb.rerank_top_k, kb.rerank_min_score, kb.rerank_max_drop) == (5, 0.2, 0.5)
    client.post(url, {"rerank_top_k": 5, "rerank_max_drop": "3"})
    kb.refresh_from_db()
    assert kb.rerank_max_drop == 0.5  # refused: out of range


def test_admin_is_registered_for_every_model_and_pages_render(admin_client, kb, conversation):
    from django.apps import apps

    for app in ("ragapp", "ingestion", "chat", "retrieval"):
        for model in apps.get_app_config(app).get_models():
            assert admin.site.is_registered(model), model
            url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
            assert admin_client.get(url).status_code == 200, url
    doc = kb.documents.first()
    page = admin_client.get(reverse("admin:ingestion_document_change", args=[doc.pk]))
    assert page.status_code == 200
    assert 'name="content_hash"' not in page.content.decode()  # read-only


@pytest.mark.models
def test_hit_testing_shows_recall_and_reranked_lists_with_the_cut_off(client, alice, kb):
    from django.contrib.postgres.search import SearchVector

    from tests.conftest import make_chunk

    doc = kb.documents.get(original_name="guide.pdf")
    for i, text in enumerate(
        [
            "VACUUM reclaims storage occupied by dead tuples.",
            "Indexes speed up lookups.",
            "VACUUM FULL rewrites the table.",
            "Backups are taken with pg_dump.",
        ],
        start=1,
    ):
        make_chunk(kb, doc, i, text)
    Chunk.objects.filter(knowledge_base=kb).update(
        search_vector=SearchVector("search_text", config="english")
    )
    client.force_login(alice)
    url = reverse("hit_test", args=[kb.pk])
    html = client.get(url, {"q": "what does vacuum do", "top_k": 1}).content.decode()
    assert 'id="recall-list"' in html and 'id="rerank-list"' in html
    assert "cut-off (top k 1" in html
    assert html.count('class="hit cut"') >= 1


def test_staff_open_any_knowledge_base_dashboard_from_the_site_dashboard_read_only(
    client, kb, conversation, make_user
):
    for staff in (make_user("root", is_staff=True), make_user("su", is_superuser=True)):
        client.force_login(staff)
        site = client.get(reverse("dashboard")).content.decode()
        link = reverse("kb_dashboard", args=[kb.pk])
        if staff.is_staff:
            assert f'href="{link}"' in site
        response = client.get(link)
        if not staff.is_staff:  # a superuser without is_staff is an ordinary user here
            assert response.status_code == 404
            continue
        html = response.content.decode()
        assert response.status_code == 200
        assert 'id="stat-documents">2<' in html and 'id="read-only-dashboard"' in html
        # Read-only: no owner tabs, no evaluation upload, no retry they could not do.
        assert reverse("kb_settings", args=[kb.pk]) not in html
        assert reverse("kb_qa_pairs", args=[kb.pk]) not in html
        assert "/retry" not in html
        assert "/retry" not in site
        assert client.post(reverse("kb_qa_pairs", args=[kb.pk])).status_code == 404
    client.force_login(make_user("carol"))
    assert client.get(reverse("kb_dashboard", args=[kb.pk])).status_code == 404


def test_members_are_told_owner_pages_are_for_owners_and_others_get_404(
    client, alice, kb, make_user
):
    from ragapp.models import ApiToken

    editor = make_user("ed")
    Membership.objects.create(knowledge_base=kb, user=editor, role=Role.EDITOR)
    member = Membership.objects.create(knowledge_base=kb, user=make_user("vic"), role=Role.VIEWER)
    gets = ["kb_settings", "kb_delete", "kb_dashboard", "kb_reranker"]
    posts = [
        reverse("kb_settings", args=[kb.pk]),
        reverse("kb_delete", args=[kb.pk]),
        reverse("kb_thresholds", args=[kb.pk]),
        reverse("kb_member_remove", args=[kb.pk, member.pk]),
        reverse("kb_qa_pairs", args=[kb.pk]),
    ]
    client.force_login(editor)
    for name in gets:
        response = client.get(reverse(name, args=[kb.pk]))
        assert response.status_code == 403, name
        assert "Only the owners of this knowledge base can do this." in response.content.decode()
    for url in posts:
        assert client.post(url, {"name": "pwned"}).status_code == 403, url
    kb.refresh_from_db()
    assert kb.name == "manuals" and Membership.objects.filter(pk=member.pk).exists()
    # Someone who is not a member learns nothing: 404 as for a missing knowledge base.
    client.force_login(make_user("mallory"))
    for name in gets:
        assert client.get(reverse(name, args=[kb.pk])).status_code == 404, name
    for url in posts:
        assert client.post(url, {"name": "pwned"}).status_code == 404, url

    # The API answers the same way, in JSON.
    auth = {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(editor, 't')[1]}"}
    response = client.delete(f"/api/v1/knowledge-bases/{kb.pk}", **auth)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    auth = {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(make_user('eve'), 't')[1]}"}
    response = client.delete(f"/api/v1/knowledge-bases/{kb.pk}", **auth)
    assert response.status_code == 404
    assert KnowledgeBase.objects.filter(pk=kb.pk).exists()
