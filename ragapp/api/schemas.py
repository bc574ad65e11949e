from __future__ import annotations

from datetime import datetime
from typing import Annotated

from ninja import Field, Schema
from pydantic import AfterValidator


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL characters: refuse them as invalid input.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]


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
    rerank_min_score: float | None = None
    rerank_max_drop: float | None = Field(None, ge=0, le=1)


class KnowledgeBaseOut(Schema):
    id: int
    name: str
    description: str
    owner: str
    role: str
    embedders: list[str]
    documents: int
    created_at: datetime
    updated_at: datetime


class MemberIn(Schema):
    username: Text = Field(..., min_length=1, max_length=150)
    role: Text = Field(..., pattern="^(owner|editor|viewer)$")


class MemberOut(Schema):
    username: str
    role: str


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
    chunks: int | None = None
    created_at: datetime
    updated_at: datetime


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


class SearchIn(Schema):
    knowledge_bases: list[int] = Field(..., min_length=1, max_length=20)
    query: Text = Field(..., min_length=1, max_length=4000)
    top_k: int | None = Field(None, ge=1, le=100)
    recall_k: int | None = Field(None, ge=1, le=500)
    reranker: Text | None = Field(None, max_length=128)
    dense: bool = True
    keyword: bool = True


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


class ConversationDetail(ConversationOut):
    messages: list[MessageOut]
