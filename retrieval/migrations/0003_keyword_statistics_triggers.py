"""The keyword-statistics triggers take the knowledge base's totals row before any lexeme row.

In 0002 both upserts ran in one statement, the totals in a data-modifying WITH. PostgreSQL
runs such a WITH after the main statement when nothing reads it, so a statement locked its
lexeme rows first and the totals row last. Two transactions writing chunks of one knowledge
base then deadlocked: one held lexemes and waited for the totals row, the other held the
totals row (from an earlier statement of its transaction) and waited for a lexeme. This
happened twice in a 1,000-file batch (manage.py bench_batch). The two upserts are now two
statements, totals first: every writer of a knowledge base's chunks queues on that one row
before it touches a lexeme, so the lexeme locks can no longer form a cycle.

Deletes and updates also remove the rows they bring to zero: a deleted knowledge base or
document left its words counted at df 0 for ever, so the table only grew."""

from importlib import import_module

from django.db import migrations

before = import_module("retrieval.migrations.0002_keyword_statistics")

APPLY = """
CREATE OR REPLACE FUNCTION retrieval_chunk_stats_{op}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO retrieval_keywordstats AS s (knowledge_base_id, chunks, total_length)
    SELECT d.knowledge_base_id, sum(d.sign), sum(d.sign * d.search_length)
    FROM ({delta}) d
    GROUP BY 1 ORDER BY 1
    ON CONFLICT (knowledge_base_id) DO UPDATE
    SET chunks = s.chunks + excluded.chunks,
        total_length = s.total_length + excluded.total_length;

    INSERT INTO retrieval_lexemestats AS s (knowledge_base_id, lexeme, df, max_tf)
    SELECT d.knowledge_base_id, u.lexeme, sum(d.sign),
           max(CASE WHEN d.sign > 0 THEN coalesce(array_length(u.positions, 1), 1) ELSE 0 END)
    FROM ({delta}) d CROSS JOIN LATERAL unnest(d.search_vector) u
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (knowledge_base_id, lexeme) DO UPDATE
    SET df = s.df + excluded.df, max_tf = greatest(s.max_tf, excluded.max_tf);
{cleanup}
    RETURN NULL;
END
$fn$;
"""
# For deletes and updates: what fell to zero goes (an insert never lowers a count).
CLEANUP = """
    DELETE FROM retrieval_lexemestats s
    USING (SELECT DISTINCT d.knowledge_base_id, u.lexeme
           FROM ({delta}) d CROSS JOIN LATERAL unnest(d.search_vector) u WHERE d.sign < 0) z
    WHERE s.knowledge_base_id = z.knowledge_base_id AND s.lexeme = z.lexeme AND s.df <= 0;
    DELETE FROM retrieval_keywordstats s
    USING (SELECT DISTINCT d.knowledge_base_id FROM ({delta}) d WHERE d.sign < 0) z
    WHERE s.knowledge_base_id = z.knowledge_base_id AND s.chunks <= 0;
"""
ZEROS = (
    "DELETE FROM retrieval_lexemestats WHERE df <= 0;"
    "DELETE FROM retrieval_keywordstats WHERE chunks <= 0;"
)


def functions(template: str) -> str:
    # (0002's template has no {cleanup}: str.format ignores the extra argument.)
    return "".join(
        template.format(
            op=op,
            delta=delta,
            cleanup="" if op == "insert" else CLEANUP.format(delta=delta),
        )
        for op, delta in (
            ("insert", before.INSERTED),
            ("update", before.UPDATED),
            ("delete", before.DELETED),
        )
    )


class Migration(migrations.Migration):
    dependencies = [("retrieval", "0002_keyword_statistics")]

    operations = [migrations.RunSQL(functions(APPLY) + ZEROS, functions(before.APPLY))]
