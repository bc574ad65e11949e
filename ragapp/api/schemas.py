from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from ninja import Field, Schema
from pydantic import AfterValidator, model_validator

from ragapp.validation import text_problem


def _storable(value: str) -> str:
    # PostgreSQL text cannot hold NUL or unpaired surrogates: refuse them as invalid input.
    problem = text_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Text = Annotated[str, AfterValidator(_storable)]
# JSON as Python reads it also carries NaN, Infinity and 1e999 (= inf): never a valid number.
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class ErrorOut(Schema):
    error: dict


class KnowledgeBaseIn(Schema):
    name: Text = Field(..., min_length=1, max_length=200)
    description: Text = Field("", max_length=5000)


class KnowledgeBasePatch(Schema):
    name: Text | None = Field(None, min_length=1, max_length=200)
    description: Text | None = Field(None, max_length=5000)
    reranker: Text | None = Field(None, max_length=128)
    rerank_top_k: int | None = Field(None, ge=1, le=100)
    rerank_min_score: FiniteFloat | None = None
    rerank_max_drop: FiniteFloat | None = Field(None, ge=0, le=1)
    # The chat answers only above this calibrated confidence (null: calibrated/default).
    abstain_threshold: FiniteFloat | None = Field(None, ge=0, le=1)
    # Contributors' uploads wait for an editor's or owner's approval (null: unchanged).
    require_review: bool | None = None


class KnowledgeBaseOut(Schema):
    id: int
    name: str
    description: str
    owner: str
    role: str
    embedders: list[str]
    documents: int
    abstain_threshold: float | None = None
    abstain_calibrated: float | None = None
    require_review: bool = False
    created_at: datetime
    updated_at: datetime


class MemberIn(Schema):
    """A user (`username`) or a whole group (`group`, by name): exactly one of the two."""

    username: Text | None = Field(None, min_length=1, max_length=150)
    group: Text | None = Field(None, min_length=1, max_length=150)
    role: Text = Field(..., pattern="^(owner|editor|contributor|viewer)$")

    @model_validator(mode="after")
    def _one_grantee(self):
        if (self.username is None) == (self.group is None):
            raise ValueError("give exactly one of username and group")
        return self


class MemberOut(Schema):
    """Users come as {"username", "role"}, groups as {"group", "role"}."""

    username: str | None = None
    group: str | None = None
    role: str


class GroupIn(Schema):
    name: Text = Field(..., min_length=1, max_length=150)


class GroupOut(Schema):
    id: int
    name: str


class GroupMemberIn(Schema):
    username: Text = Field(..., min_length=1, max_length=150)


class GroupMemberOut(Schema):
    group: str
    username: str


class UrlIn(Schema):
    url: Text = Field(..., min_length=8, max_length=2000, pattern="^https?://")


class DocumentOut(Schema):
    id: int
    knowledge_base: int
    name: str
    status: str
    progress: int
    error: str
    mime_type: str
    size: int
    pages: int | None
    language: str
    source_url: str
    # Metadata (filterable: see ingestion.scope), and on one document (GET/PATCH
    # /documents/{id}) its automatic fields under their filter keys: type, language,
    # uploaded_by, uploaded_at, pages, size, source_url.
    tags: list[str] = Field(default_factory=list)
    meta: dict = Field(default_factory=dict)
    fields: dict | None = None
    chunks: int | None = None
    # Chunks edited, added or deleted by hand since the last ingest; a re-ingest replaces them.
    manual_edits: int = 0
    # While queued: place in the site's one ingestion queue (1 = next) and estimated
    # seconds until ready from recently measured throughput (None before any has finished).
    queue_position: int | None = None
    eta_seconds: float | None = None
    # Contributions: "pending" (waiting for review, not indexed), "rejected" (with the
    # reviewer's reason) or "approved".
    review_status: str = "approved"
    review_reason: str = ""
    # Restricted documents: {"users": [...], "groups": [...]}; None when everyone may see it.
    visible_to: dict | None = None
    created_at: datetime
    updated_at: datetime


class DocumentPatch(Schema):
    """Omitted fields are left alone. visible_to: {"users": [...], "groups": [...]} restricts
    the document to these members (and the owners); null lifts the restriction."""

    tags: list[str] | None = None
    meta: dict | None = None
    visible_to: dict | None = None


class RejectIn(Schema):
    reason: Text = Field(..., min_length=1, max_length=2000)


class UploadOut(Schema):
    accepted: list[DocumentOut]
    refused: list[dict]


class ChunkOut(Schema):
    id: int
    ordinal: int
    text: str
    heading: str
    page: int | None
    sheet: str
    slide: int | None
    kind: str
    token_count: int
    parent_id: int | None
    enabled: bool
    questions: list[str]
    edited: bool


class ChunkPage(Schema):
    items: list[ChunkOut]
    count: int


# Limits as ingestion.chunk_editing enforces them (CHUNK_TEXT_MAX_CHARS, ...).
ChunkText = Annotated[Text, Field(min_length=1, max_length=20_000)]
ChunkQuestion = Annotated[Text, Field(max_length=500)]


class ChunkPatch(Schema):
    text: ChunkText | None = None
    enabled: bool | None = None
    questions: list[ChunkQuestion] | None = Field(None, max_length=20)


class ChunkIn(Schema):
    text: ChunkText


class SearchIn(Schema):
    knowledge_bases: list[int] = Field(..., min_length=1, max_length=20)
    query: Text = Field(..., min_length=1, max_length=4000)
    top_k: int | None = Field(None, ge=1, le=100)
    recall_k: int | None = Field(None, ge=1, le=500)
    reranker: Text | None = Field(None, max_length=128)
    dense: bool = True
    keyword: bool = True
    # {"tags": [...], "meta": {key: value | {"eq"|"in"|"gte"|"lte": value}}} (ingestion.scope)
    filters: dict | None = None


class PassageOut(Schema):
    chunk_id: int
    document_id: int
    document: str
    page: int | None
    heading: str
    sheet: str
    text: str
    context: str
    recall_rank: int
    recall_score: float
    rerank_score: float | None
    # The support stage: the best sentence's similarity (first passages only) and the
    # final score; results come in the order of `score`, the order the chat answers from.
    support: float | None = None
    score: float
    signals: dict[str, float]


class SearchOut(Schema):
    query: str
    reranker: str
    results: list[PassageOut]
    recalled: int
    timings_ms: dict[str, float]


class ChatIn(Schema):
    question: Text = Field(..., min_length=1, max_length=4000)
    knowledge_bases: list[int] = Field(default_factory=list, max_length=20)
    conversation_id: int | None = None
    stream: bool = False
    filters: dict | None = None  # as SearchIn.filters


class ConversationOut(Schema):
    id: int
    title: str
    knowledge_bases: list[int]
    created_at: datetime
    updated_at: datetime


class MessageOut(Schema):
    id: int
    role: str
    content: str
    mode: str
    sources: list
    unverified: list
    timings_ms: dict
    error: str
    created_at: datetime
    feedback: int | None = None  # the user's 👍 (1) / 👎 (-1) on an answer, if any


class ConversationDetail(ConversationOut):
    messages: list[MessageOut]


class DocumentsBulkIn(Schema):
    """Re-ingest or delete many documents of one knowledge base (at most 500 ids)."""

    action: Literal["reingest", "delete"]
    ids: list[int] = Field(..., min_length=1, max_length=500)


class DocumentsBulkResult(Schema):
    id: int
    ok: bool
    # "", not_found (absent or not yours to change), not_approved (a contribution waiting
    # for review), refused (e.g. the knowledge base's FAQ document).
    error: str = ""
    message: str = ""


class DocumentsBulkOut(Schema):
    action: str
    done: int
    failed: int
    results: list[DocumentsBulkResult]
