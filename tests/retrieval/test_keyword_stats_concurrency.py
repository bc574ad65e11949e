"""Two workers storing chunks of one knowledge base at once never deadlock on the keyword
statistics (retrieval migration 0003): each transaction takes the knowledge base's totals row
before any lexeme row, so lexeme locks cannot form a cycle."""

import threading
import time

import pytest
from django.contrib.postgres.search import SearchVector
from django.db import DatabaseError, connection, transaction
from django.db.models import Value

from ingestion.models import Chunk, Document
from retrieval.models import KeywordStats, LexemeStats
from retrieval.text import TS_CONFIG


def _chunk(document, ordinal: int, text: str) -> None:
    Chunk.objects.create(
        document=document,
        knowledge_base_id=document.knowledge_base_id,
        ordinal=ordinal,
        text=text,
        search_text=text,
        search_length=len(text.split()),
        search_vector=SearchVector(Value(text), config=TS_CONFIG),
    )


@pytest.mark.django_db(transaction=True)
def test_concurrent_chunk_writes_of_one_knowledge_base_do_not_deadlock(make_user, make_kb):
    kb = make_kb(make_user("owner"), "docs")
    first, second = (
        Document.objects.create(knowledge_base=kb, original_name=n, content_hash=n)
        for n in ("a.txt", "b.txt")
    )
    errors: list[Exception] = []
    a_wrote_once, a_may_go_on = threading.Event(), threading.Event()

    def writer(document, texts, *, wrote_once=None, go_on=None):
        try:
            with transaction.atomic():
                _chunk(document, 0, texts[0])
                if wrote_once:
                    wrote_once.set()
                    go_on.wait(10)
                _chunk(document, 1, texts[1])
        except DatabaseError as exc:
            errors.append(exc)
        finally:
            connection.close()

    # A writes "alpha" and pauses inside its transaction; B starts writing "beta" and
    # "gamma"; then A writes "beta". With the totals row taken last, B held "beta" while
    # waiting for the totals row A held, and A's "beta" closed the cycle.
    a = threading.Thread(
        target=writer,
        args=(first, ["alpha apples", "beta bananas"]),
        kwargs={"wrote_once": a_wrote_once, "go_on": a_may_go_on},
    )
    b = threading.Thread(target=writer, args=(second, ["beta bananas", "gamma grapes"]))
    a.start()
    assert a_wrote_once.wait(10)
    b.start()
    time.sleep(0.5)  # B is now waiting inside its first write
    a_may_go_on.set()
    a.join(30)
    b.join(30)

    assert not errors, errors
    assert KeywordStats.objects.get(knowledge_base_id=kb.pk).chunks == 4
    df = dict(LexemeStats.objects.filter(knowledge_base_id=kb.pk).values_list("lexeme", "df"))
    assert df["banana"] == 2 and df["alpha"] == df["gamma"] == 1
