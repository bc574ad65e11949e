"""Contents and index pages are recognised at ingestion and kept out of the first places."""

from ingestion.contents import is_contents_page, mark_contents_pages
from ingestion.parsers.base import Section
from retrieval.support import order_by_support
from retrieval.types import Candidate

EN_TOC = (
    "Contents 1 Introduction . . . . . . . 1 1.1 Getting started . . . . . . . 2 "
    "1.2 Installation . . . . . . . 4 2 Usage . . . . . . . 7 2.1 Options . . . . . . . 9 "
    "3 Reference . . . . . . . 12"
)
ZH_TOC = (
    "1 正确的起点 1 1.1 Debian 的社会驱动力 … 1 1.2 需要的开发工具 … 3 1.3 需要的开发文档 … 4 "
    "1.4 到何处求助 … 4 2 第一步 6 2.1 Debian 软件包制作流程 … 6 2.2 挑一个你喜欢的程序 … 7"
)
INDEX = (
    "索引 符号 \\! (数学命令), 48 & (单元格/对齐), 27, 46, 47 \\- (断词), 17 "
    "abstract 环境, 26 \\addbibresource (biblatex), 79 \\addcontentsline, 20"
)
INDEX_CONTINUED = (
    "asn1_read_value, 15 asn1_read_tag, 18 asn1_write_value, 14 asn1_der_coding, 20 "
    "asn1_delete_structure, 12 asn1_create_element, 11 asn1_copy_node, 13 asn1_dup_node, 13 "
    "asn1_bit_der, 20 asn1_get_length_der, 21"
)
CODE = (
    "\\begin{tikzpicture} \\draw[help lines](0,0) rectangle (1,1); \\draw[scale=1.5] (0,0) "
    "rectangle (1,1); \\draw[rotate=30] (0,0) rectangle (1,1); \\draw[help lines](2,0) "
    "rectangle (3,1); \\draw[yshift=4pt](2,0) rectangle (3,1); \\draw[help lines](4,0)"
)
PROSE = (
    "VACUUM reclaims storage occupied by dead tuples. In normal PostgreSQL operation, tuples "
    "that are deleted are not physically removed from their table until a VACUUM is done."
)


def test_contents_and_index_pages_are_recognised_in_both_languages():
    assert is_contents_page(EN_TOC)
    assert is_contents_page(ZH_TOC)
    assert is_contents_page(INDEX)
    assert is_contents_page(INDEX_CONTINUED, follows_contents=True)


def test_prose_code_and_number_tables_are_not_contents():
    assert not is_contents_page(PROSE)
    assert not is_contents_page(CODE)
    assert not is_contents_page(INDEX_CONTINUED)  # index-like only right after an index page
    assert not is_contents_page("Year 2020 2021 2022 Revenue 12 15 19 Costs 10 11 12")


def test_sections_on_contents_pages_become_toc():
    sections = [
        Section(EN_TOC, page=2),
        Section(PROSE, page=3),
        Section(INDEX, page=9),
        Section(INDEX_CONTINUED, page=10),
    ]
    kinds = [s.kind for s in mark_contents_pages(sections)]
    assert kinds == ["toc", "text", "toc", "toc"]


def test_support_stage_keeps_contents_below_passages_that_can_answer():
    toc = Candidate(1, 1, "m.pdf", "toc", "toc", page=2, kind="toc", rerank_score=5.0)
    body = [
        Candidate(i, 1, "m.pdf", f"t{i}", f"t{i}", page=i, rerank_score=s)
        for i, s in ((2, 4.0), (3, 3.0), (4, 1.0))
    ]
    ordered = order_by_support([toc, *body], [0.5, 0.4, 0.3])
    assert [c.chunk_id for c in ordered][0] != 1
    assert ordered[-1].chunk_id in (1, 4)
    toc_out = next(c for c in ordered if c.chunk_id == 1)
    assert toc_out.support is None
    finals = [c.score for c in ordered]
    assert finals == sorted(finals, reverse=True)
