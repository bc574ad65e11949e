"""Hit testing, POST /api/v1/search and the chat read one ranking: recall -> rerank ->
cut-offs -> sentence support. For the same question and knowledge base their passages come
in the same order, and the scores they show fall in that order."""

import re

import pytest

from chat.services import answer_question
from ragapp.models import ApiToken
from tests.conftest import ingest_texts

pytestmark = [pytest.mark.models, pytest.mark.django_db]

DOCS = {
    "backup.md": "# Backup\n\npg_dump writes a consistent backup of one PostgreSQL database as "
    "an SQL script. To restore it, feed the script to psql.\n\n## Restore\n\nUse pg_restore "
    "for archives in the custom format.",
    "vacuum.md": "# Vacuum\n\nVACUUM reclaims storage occupied by dead tuples. Run it "
    "regularly, or let autovacuum do it.",
    "indexes.md": "# Indexes\n\nA B-tree index keeps keys sorted. A backup of an index is "
    "never needed: it is rebuilt from the table.",
    "toc.md": "# Contents\n\nBackup 1\n\nRestore 2\n\nVacuum 3",
}


@pytest.mark.parametrize("question", ["How do I back up a database?", "怎样备份数据库？"])
def test_hit_testing_search_and_chat_share_one_order(client, make_user, make_kb, question):
    kb = ingest_texts(make_kb(make_user("alice"), "manuals"), DOCS)
    client.force_login(kb.owner)
    page = client.get(f"/kb/{kb.pk}/hit-test/", {"q": question}).content.decode()
    final_list = page.split('id="final-list"', 1)[1].split("</ol>", 1)[0]
    hit_test = [int(x) for x in re.findall(r'data-chunk="(\d+)"', final_list)]

    _, raw = ApiToken.issue(kb.owner)
    body = client.post(
        "/api/v1/search",
        {"knowledge_bases": [kb.pk], "query": question},
        content_type="application/json",
        headers={"Authorization": f"Bearer {raw}"},
    ).json()
    api = [r["chunk_id"] for r in body["results"]]
    scores = [r["score"] for r in body["results"]]

    done = list(answer_question(user=kb.owner, knowledge_bases=[kb], question=question))[-1]
    chat = [s["chunk_id"] for s in done.data["sources"]]

    assert hit_test and hit_test == api
    assert scores == sorted(scores, reverse=True)
    assert chat == api[: len(chat)]  # an abstention shows the nearest passages, same order
    shown = [s["score"] for s in done.data["sources"]]
    assert shown == sorted(shown, reverse=True)
