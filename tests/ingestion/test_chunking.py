from dataclasses import dataclass

from ingestion.chunking import ChunkSizes, chunk_sections, split_sentences
from retrieval.embedders import approximate_token_count as count


@dataclass(frozen=True)
class S:  # the parser's Section shape
    text: str
    kind: str = "text"
    heading_path: tuple = ()
    level: int | None = None
    page: int | None = None
    sheet: str = ""
    slide: int | None = None
    table_header: str = ""
    table_rows: tuple = ()


def test_chinese_and_english_sentence_ends():
    assert split_sentences("第一句。第二句！第三句？第四；Fifth one. Sixth!") == [
        "第一句。",
        "第二句！",
        "第三句？",
        "第四；",
        "Fifth one.",
        "Sixth!",
    ]


def test_chunks_follow_headings_and_never_exceed_size():
    sizes = ChunkSizes(chunk_tokens=40, overlap_tokens=8, parent_tokens=120)
    body = " ".join(f"Sentence number {i} talks about indexes." for i in range(30))
    sections = [
        S("Intro", kind="title", level=1),
        S(body, heading_path=("Intro",), page=1),
        S("Other", kind="title", level=1),
        S("A short paragraph under another heading.", heading_path=("Other",), page=2),
    ]
    drafts = chunk_sections(sections, sizes=sizes, count_tokens=count)
    children = [d for d in drafts if not d.is_parent]
    parents = [d for d in drafts if d.is_parent]
    assert all(d.token_count <= sizes.chunk_tokens + sizes.overlap_tokens for d in children)
    assert {d.heading_path for d in children} == {"Intro", "Other"}
    assert parents and all(d.heading_path == "Intro" for d in parents)
    # Every child of "Intro" points at a parent that contains its text.
    linked = [d for d in children if d.heading_path == "Intro" and d.parent_index is not None]
    assert len(linked) >= len([d for d in children if d.heading_path == "Intro"]) - 1
    for d in linked:
        assert d.text in drafts[d.parent_index].text
    # The short section needs no parent: it is its own context.
    other = [d for d in children if d.heading_path == "Other"]
    assert len(other) == 1 and other[0].parent_index is None and other[0].page == 2
    # Words are never cut in half.
    words = set(body.split())
    for d in children:
        if d.heading_path == "Intro":
            assert set(d.text.split()) <= words


def test_overlap_repeats_the_tail_of_the_previous_chunk():
    sizes = ChunkSizes(chunk_tokens=30, overlap_tokens=12, parent_tokens=1000)
    text = " ".join(f"Fact {i} is here." for i in range(40))
    children = [
        d for d in chunk_sections([S(text)], sizes=sizes, count_tokens=count) if not d.is_parent
    ]
    assert len(children) > 2
    # The second chunk starts inside the first one and goes on past it.
    head = children[1].text[:15]
    assert head in children[0].text
    assert children[0].text.endswith(
        children[1].text[: len(children[0].text) - children[0].text.index(head)]
    )


def test_chunks_do_not_cross_pages():
    sizes = ChunkSizes(chunk_tokens=200, overlap_tokens=20, parent_tokens=600)
    sections = [S("Page one text.", page=1), S("Page two text.", page=2)]
    children = [
        d for d in chunk_sections(sections, sizes=sizes, count_tokens=count) if not d.is_parent
    ]
    assert [(d.page, d.text) for d in children] == [(1, "Page one text."), (2, "Page two text.")]


def test_table_chunks_repeat_the_header():
    sizes = ChunkSizes(chunk_tokens=30, overlap_tokens=5, parent_tokens=100)
    rows = tuple(f"row {i} | value {i * 10}" for i in range(50))
    table = S("", kind="table", sheet="Sheet1", table_header="name | amount", table_rows=rows)
    drafts = chunk_sections([table], sizes=sizes, count_tokens=count)
    children = [d for d in drafts if not d.is_parent]
    assert len(children) > 3
    for d in children:
        assert d.text.startswith("name | amount\n")
        assert d.kind == "table" and d.sheet == "Sheet1"
    covered = [line for d in children for line in d.text.split("\n")[1:]]
    assert covered == list(rows)


def test_long_chinese_sentence_is_split_at_word_boundaries():
    sizes = ChunkSizes(chunk_tokens=20, overlap_tokens=0, parent_tokens=100)
    text = "数据库索引能够显著提高查询性能" * 6  # one sentence, no punctuation
    children = [
        d for d in chunk_sections([S(text)], sizes=sizes, count_tokens=count) if not d.is_parent
    ]
    assert len(children) > 1
    assert "".join(d.text for d in children) == text
    assert all(d.token_count <= 20 for d in children)
