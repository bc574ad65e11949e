"""Follow-up questions without a language model.

"And how do I update it later?" means nothing to retrieval on its own. With an LLM the
question is rewritten from the conversation (chat.prompts.condense_messages); without one,
or when that rewrite fails, the previous standalone question is carried along: its words
reach keyword search and its meaning the embedders, and the new question's own words still
decide between the passages about that topic. Only short or referring questions are
completed, so a new, self-contained question is never dragged back to the old topic.
"""

from __future__ import annotations

import re

from retrieval.text import query_tokens
from textkit import has_cjk

# Words that point back into the conversation.
# ("that", "one", "there" ... also appear in self-contained questions: left out.)
_EN_REFERS = re.compile(
    r"\b(it|its|this|these|those|they|them|their|theirs|he|she|him|her|same|former|latter|"
    r"aforementioned)\b",
    re.I,
)
_EN_LEADS = re.compile(r"^\s*(and|but|also|so|then|what about|how about|and if|or)\b", re.I)
_ZH_REFERS = re.compile(
    r"(它|其中|^其|这个|那个|这些|那些|这种|那种|该|上述|前者|后者|^还有|^那么|^那|^还|^另外)"
)
# A question with at most this many content words is too short to stand alone.
SHORT_CONTENT_WORDS = 3


def needs_context(question: str) -> bool:
    content = query_tokens(question)
    if has_cjk(question):
        return bool(_ZH_REFERS.search(question)) or len(content) <= SHORT_CONTENT_WORDS - 1
    return (
        bool(_EN_REFERS.search(question) or _EN_LEADS.search(question))
        or len(content) <= SHORT_CONTENT_WORDS - 1
    )


def carry_context(question: str, previous: str) -> str:
    """The question completed with the previous standalone question, when it needs it."""
    previous = (previous or "").strip()
    if not previous or not needs_context(question):
        return question
    return f"{previous} {question}"
