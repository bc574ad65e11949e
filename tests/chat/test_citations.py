"""The claim check reads an answer's Markdown as a reader does: only prose sentences are
checked; labels, list markers, headings, tables and code are never reported."""

from chat.citations import answer_sentences, check_claims, prose_blocks


class FixedScorer:
    """Scores every passage `support`; remembers what it was asked."""

    def __init__(self, support: float = 0.9) -> None:
        self.support = support
        self.queries: list[str] = []

    def score(self, query, passages):
        self.queries.append(query)
        return [self.support for _ in passages]


PASSAGES = ["pg_dump writes a backup.", "psql restores it.", "VACUUM reclaims space."]


def checked(answer: str, support: float = 0.9) -> list[str]:
    return [
        c.sentence
        for c in check_claims(answer, PASSAGES, scorer=FixedScorer(support), threshold=0.5)
    ]


def test_bold_labels_and_numbered_steps_are_not_claims():
    answer = (
        "**Steps:**\n\n"
        "1. Run `pg_dump mydb > out.sql` to write a backup [1].\n"
        "2. Restore it with **psql** [2].\n\n"
        "**Note:** VACUUM reclaims space [3]."
    )
    assert checked(answer) == [
        "Run pg_dump mydb > out.sql to write a backup .",
        "Restore it with psql .",
        "Note: VACUUM reclaims space .",
    ]


def test_headings_code_fences_and_indented_code_are_skipped():
    answer = (
        "# Backing up\n\n"
        "Use pg_dump for a logical backup [1].\n\n"
        "```sh\npg_dump mydb > out.sql\npsql mydb < out.sql\n```\n\n"
        "Setext heading\n==============\n\n"
        "    psql -f out.sql\n\n"
        "~~~\nnot a claim. at all.\n~~~\n"
        "Then restore it with psql [2]."
    )
    assert checked(answer) == ["Use pg_dump for a logical backup .", "Then restore it with psql ."]


def test_tables_are_skipped():
    answer = (
        "The tools compare as follows [1].\n\n"
        "| Tool | Purpose |\n|---|---|\n| pg_dump | backup [1] |\n| psql | restore [2] |\n\n"
        "Both ship with PostgreSQL [1]."
    )
    assert checked(answer) == ["The tools compare as follows .", "Both ship with PostgreSQL ."]


def test_lead_in_lines_and_bare_markers_are_not_reported():
    answer = "To back up a database:\n\n- pg_dump writes a script [1]\n- [2]\n* \n\n---\n\n1.\n"
    scorer = FixedScorer(0.1)
    checks = check_claims(answer, PASSAGES, scorer=scorer, threshold=0.5)
    assert [c.sentence for c in checks] == ["pg_dump writes a script"]
    assert checks[0].cites == (1,) and not checks[0].verified
    assert scorer.queries == ["pg_dump writes a script"]


def test_links_emphasis_and_quotes_keep_their_text():
    answer = "> See [the manual](https://example.com/x) for *all* options [1].\nIt is _long_."
    assert prose_blocks(answer) == ["See the manual for all options [1]. It is long."]
    assert answer_sentences(answer) == ["See the manual for all options [1].", "It is long."]


def test_plain_answers_are_checked_as_before():
    checks = check_claims(
        "pg_dump writes a backup [1]. It can also brew coffee.",
        PASSAGES,
        scorer=FixedScorer(0.9),
        threshold=0.5,
    )
    assert [(c.sentence, c.cites, c.verified) for c in checks] == [
        ("pg_dump writes a backup .", (1,), True),
        ("It can also brew coffee.", (), False),
    ]


def test_chinese_sentences_and_list():
    answer = "**步骤：**\n\n1. 选择“插入”菜单[1]。\n2. 插入页码字段[1]。"
    assert checked(answer, 0.2) == ["选择“插入”菜单。", "插入页码字段。"]


def test_a_link_the_browser_will_not_render_stays_as_written():
    # The browser shows "[x](javascript:...)" as text: the sentence must read the same.
    assert prose_blocks("See [x](javascript:alert(1)) and [y](https://e.org) [1].") == [
        "See [x](javascript:alert(1)) and y [1]."
    ]


def test_tables_without_outer_pipes_and_wrapped_list_items():
    answer = (
        "Tool | Purpose\n--- | ---\npg_dump | backup [1]\npsql | restore\n\n"
        "- pg_dump writes a backup\n  of one database [1].\n- psql restores it [2]."
    )
    assert answer_sentences(answer) == [
        "pg_dump writes a backup of one database [1].",
        "psql restores it [2].",
    ]
