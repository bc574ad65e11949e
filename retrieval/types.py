"""Small frozen records that the retrieval stages hand each other."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Candidate:
    chunk_id: int
    document_id: int
    document_name: str
    text: str  # the small chunk that recall matched
    context: str  # its parent's text when it has one: what the reranker and the LLM read
    heading_path: str = ""
    page: int | None = None
    page_end: int | None = None
    sheet: str = ""
    slide: int | None = None
    knowledge_base_id: int | None = None
    kind: str = "text"  # the chunk's kind ("toc": a contents or index page)
    recall_rank: int = 0
    recall_score: float = 0.0
    signals: dict[str, float] = field(default_factory=dict)  # per-stage raw scores
    rerank_score: float | None = None
    # The support stage (retrieval.support): how well the passage's best sentence speaks to
    # the query, and the score of the final order that hit testing, search and chat share.
    support: float | None = None
    final_score: float | None = None

    @property
    def score(self) -> float:
        """The score of the latest stage this candidate went through."""
        if self.final_score is not None:
            return self.final_score
        return self.rerank_score if self.rerank_score is not None else self.recall_score
