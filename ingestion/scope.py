"""Which documents of the selected knowledge bases a request may read: one SQL condition,
applied inside recall (dense, keyword and the absent-word check) before ranking, so a user
who may not see some documents still gets k candidates from the ones they may see.

`document_scope(user=..., knowledge_bases=..., filters=...)` builds it from three parts:
- review: only approved documents are indexed and visible (contributions waiting for review
  or rejected are not);
- visibility: a restricted document is read only by the users and groups it names and by the
  knowledge base's owners;
- filters: the request's metadata filter (tags: any of; meta: all of; operators eq, in, gte,
  lte), the same language everywhere.

The condition is on the alias `d` (ingestion_document); recall wraps it as
`c.document_id IN (SELECT d.id FROM ingestion_document d WHERE <sql>)`. Every other read of
documents (lists, files, sources, dashboards ...) goes through `visible_documents`, which
uses the same rules, so what recall may not return cannot be opened either.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date


class InvalidFilter(ValueError):
    """A metadata filter that does not follow the filter language; message is user-facing."""


@dataclass(frozen=True)
class DocumentScope:
    sql: str = "TRUE"
    params: list = field(default_factory=list)
    # The visibility condition alone (on alias d, no metadata filter): what the request's
    # user may see at all. "" when nothing is hidden from them (the system, an owner...).
    visible_sql: str = ""
    visible_params: list = field(default_factory=list)
    # The metadata filter alone (on alias d). "" without one.
    filter_sql: str = ""
    filter_params: list = field(default_factory=list)
    _hides: dict = field(default_factory=dict, compare=False, repr=False)

    def hides_documents(self, knowledge_base_ids: Sequence[int]) -> bool:
        """Whether these knowledge bases hold a restricted document this user may not see.
        Collection statistics (keyword IDF) must then come from the visible chunks only, or
        a hidden document's words would shape the scores this user sees. Asked once per
        scope (a request's) and set of knowledge bases."""
        if not self.visible_sql:
            return False
        key = tuple(sorted(int(pk) for pk in knowledge_base_ids))
        if key not in self._hides:
            self._hides[key] = self._hides_documents(key)
        return self._hides[key]

    def _hides_documents(self, knowledge_base_ids: Sequence[int]) -> bool:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT EXISTS (SELECT 1 FROM ingestion_document d WHERE "
                "d.knowledge_base_id = ANY(%s) AND d.restricted "
                f"AND NOT ({self.visible_sql}))",
                [[int(pk) for pk in knowledge_base_ids], *self.visible_params],
            )
            return bool(cursor.fetchone()[0])

    def recall_sql(
        self, column: str = "c.document_id", knowledge_base_ids: Sequence[int] | None = None
    ) -> tuple[str, list]:
        """`AND <column> IN (...)` for recall queries over these knowledge bases' chunks,
        with its parameters: only the conditions that can exclude an indexed chunk.

        - Review is not one of them: only approved documents are ever indexed (ingestion
          claims no other, chunks are edited only on ready documents), and the subquery over
          every approved document cost keyword search at 500k chunks most of its time
          (p95 227 ms with it, 84 ms without: bench_search --corpus).
        - Visibility is one only where these knowledge bases hide a document from this user
          (hides_documents; always when knowledge_base_ids is not given).
        - The metadata filter always is."""
        conditions, params = [], []
        if self.visible_sql and (
            knowledge_base_ids is None or self.hides_documents(knowledge_base_ids)
        ):
            conditions.append(f"({self.visible_sql})")
            params += self.visible_params
        if self.filter_sql:
            conditions.append(f"({self.filter_sql})")
            params += self.filter_params
        if not conditions:
            return "", []
        if knowledge_base_ids is not None:
            conditions.insert(0, "d.knowledge_base_id = ANY(%s::bigint[])")
            params.insert(0, [int(pk) for pk in knowledge_base_ids])
        where = " AND ".join(conditions)
        return f"AND {column} IN (SELECT d.id FROM ingestion_document d WHERE {where})", params


def _review_part() -> tuple[list[str], list]:
    # --- review (issue #16 part 4) ---------------------------------------------------------
    return ["d.review_status = 'approved'"], []


def _visibility_part(user, knowledge_bases: Sequence) -> tuple[list[str], list]:
    # --- visibility (issue #16 part 2) -----------------------------------------------------
    # Owners of the document's knowledge base see everything in it; everyone else sees
    # unrestricted documents and those restricted to them or to one of their groups. The
    # groups are a subquery of the same statement: leaving a group takes effect at once.
    if user is None:
        return [], []
    from django.contrib.auth import get_user_model

    from ingestion.models import Document, KnowledgeBase

    if not getattr(user, "is_authenticated", False):
        return ["NOT d.restricted"], []
    kb_ids = [getattr(kb, "pk", kb) for kb in knowledge_bases]
    owned = list(
        KnowledgeBase.objects.owned_by(user).filter(pk__in=kb_ids).values_list("pk", flat=True)
    )
    users_table = Document.visible_to_users.through._meta.db_table
    groups_table = Document.visible_to_groups.through._meta.db_table
    user_groups_table = get_user_model().groups.through._meta.db_table
    condition = (
        "NOT d.restricted OR d.knowledge_base_id = ANY(%s) "
        f"OR d.id IN (SELECT document_id FROM {users_table} WHERE user_id = %s) "
        f"OR d.id IN (SELECT document_id FROM {groups_table} WHERE group_id IN "
        f"(SELECT group_id FROM {user_groups_table} WHERE user_id = %s))"
    )
    return [condition], [owned, user.pk, user.pk]


FILTER_OPERATORS = ("eq", "in", "gte", "lte")
FILTER_MAX_TAGS = 20
FILTER_MAX_KEYS = 50
FILTER_MAX_IN_VALUES = 100
FILTER_MAX_TEXT = 500
META_KEY_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
ISO_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")

# Automatic fields, filterable under reserved meta keys (user metadata may not use them):
# key -> (SQL expression on alias d, kind). Kinds: text (eq, in), number and date (all four).
AUTOMATIC_FIELDS = {
    "type": (r"lower(substring(d.original_name from '\.([^./]+)$'))", "text"),
    "language": ("d.language", "text"),
    "uploaded_by": ("(SELECT u.username FROM {users} u WHERE u.id = d.uploaded_by_id)", "text"),
    "uploaded_at": ("(d.created_at AT TIME ZONE 'UTC')::date", "date"),
    "pages": ("d.page_count", "number"),
    "size": ("d.size", "number"),
    "source_url": ("d.source_url", "text"),
}


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_date(value) -> bool:
    if not isinstance(value, str) or not ISO_DATE_RE.fullmatch(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _filter_scalar(key: str, op: str, value):
    if isinstance(value, str):
        if len(value) > FILTER_MAX_TEXT:
            raise InvalidFilter(f"meta.{key}.{op}: at most {FILTER_MAX_TEXT} characters")
        return value
    if _is_number(value) or isinstance(value, bool):
        return value
    raise InvalidFilter(f"meta.{key}.{op}: a value must be a string, a number or a date")


def _filter_condition(key: str, op: str, value):
    """One (op, value) of a meta key, validated; returns the normalised value."""
    kind = AUTOMATIC_FIELDS[key][1] if key in AUTOMATIC_FIELDS else "meta"
    if op == "in":
        if not isinstance(value, list) or not 1 <= len(value) <= FILTER_MAX_IN_VALUES:
            raise InvalidFilter(
                f"meta.{key}.in: a list of 1 to {FILTER_MAX_IN_VALUES} values expected"
            )
        return [_filter_condition(key, "eq", v) for v in value]
    if op in ("gte", "lte"):
        if kind == "text" or not (_is_number(value) or _is_date(value)):
            raise InvalidFilter(f"meta.{key}.{op}: a number or a date (YYYY-MM-DD) expected")
    value = _filter_scalar(key, op, value)
    if kind == "text" and not isinstance(value, str):
        raise InvalidFilter(f"meta.{key}: a string expected")
    if kind == "number" and not _is_number(value):
        raise InvalidFilter(f"meta.{key}: a number expected")
    if kind == "date" and not _is_date(value):
        raise InvalidFilter(f"meta.{key}: a date (YYYY-MM-DD) expected")
    return value


def parse_filters(obj) -> dict:
    """Validate a filter in the filter language and return it normalised:
    `{"tags": [...], "meta": {key: {op: value}}}` (either part omitted when empty).
    Raises InvalidFilter, whose message is user-facing, for anything else."""
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise InvalidFilter('filters must be an object: {"tags": [...], "meta": {...}}')
    unknown = set(obj) - {"tags", "meta"}
    if unknown:
        raise InvalidFilter(f"filters: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    out: dict = {}
    tags = obj.get("tags")
    if tags is not None:
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise InvalidFilter("filters.tags: a list of strings expected")
        if len(tags) > FILTER_MAX_TAGS:
            raise InvalidFilter(f"filters.tags: at most {FILTER_MAX_TAGS} tags")
        tags = list(dict.fromkeys(t.strip() for t in tags if t.strip()))
        if any(len(t) > 100 for t in tags):
            raise InvalidFilter("filters.tags: a tag has at most 100 characters")
        if tags:
            out["tags"] = tags
    meta = obj.get("meta")
    if meta is not None:
        if not isinstance(meta, dict):
            raise InvalidFilter("filters.meta: an object expected")
        if len(meta) > FILTER_MAX_KEYS:
            raise InvalidFilter(f"filters.meta: at most {FILTER_MAX_KEYS} keys")
        parsed = {}
        for key, spec in meta.items():
            if not isinstance(key, str) or not META_KEY_RE.fullmatch(key):
                raise InvalidFilter(
                    f"filters.meta: invalid key {key!r} (letters, digits, _ . -; 1-64)"
                )
            if not isinstance(spec, dict):
                spec = {"eq": spec}
            if not spec or set(spec) - set(FILTER_OPERATORS):
                raise InvalidFilter(f"meta.{key}: operators are {', '.join(FILTER_OPERATORS)}")
            parsed[key] = {op: _filter_condition(key, op, v) for op, v in spec.items()}
        if parsed:
            out["meta"] = parsed
    return out


def _meta_sql(key: str, op: str, value) -> tuple[str, list]:
    if key in AUTOMATIC_FIELDS:
        from django.contrib.auth import get_user_model

        expr, kind = AUTOMATIC_FIELDS[key]
        expr = expr.replace("{users}", get_user_model()._meta.db_table)
        cast = "::date" if kind == "date" else ""
        if op == "in":
            array = "date[]" if kind == "date" else "numeric[]" if kind == "number" else "text[]"
            # As text: one array type whatever mix of ints and floats, cast in SQL.
            return f"{expr} = ANY(%s::{array})", [[str(v) for v in value]]
        sign = {"eq": "=", "gte": ">=", "lte": "<="}[op]
        return f"{expr} {sign} %s{cast}", [value]
    if op == "eq":
        # Containment: the GIN index on meta serves it; numbers compare as numbers.
        return "d.meta @> %s::jsonb", [json.dumps({key: value})]
    if op == "in":
        return "d.meta @> ANY(%s::jsonb[])", [[json.dumps({key: v}) for v in value]]
    sign = ">=" if op == "gte" else "<="
    # CASE, not AND: PostgreSQL does not promise to evaluate AND left to right, and a cast of
    # a stored value of another type must not raise; a mismatched type simply does not match.
    if _is_number(value):
        return (
            f"CASE WHEN jsonb_typeof(d.meta->%s) = 'number' "
            f"THEN (d.meta->>%s)::numeric {sign} %s END",
            [key, key, value],
        )
    return (
        f"CASE WHEN d.meta->>%s ~ '^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}' "
        f"THEN left(d.meta->>%s, 10) {sign} %s END",
        [key, key, value],
    )


def _filters_part(filters: dict | None) -> tuple[list[str], list]:
    # --- metadata filters (issue #16 part 3) -----------------------------------------------
    filters = parse_filters(filters)
    conditions, params = [], []
    if filters.get("tags"):
        conditions.append("d.tags && %s::varchar[]")
        params.append(filters["tags"])
    for key, spec in filters.get("meta", {}).items():
        for op, value in spec.items():
            sql, sql_params = _meta_sql(key, op, value)
            conditions.append(sql)
            params += sql_params
    return conditions, params


def document_scope(*, user=None, knowledge_bases: Sequence = (), filters: dict | None = None):
    """The scope of a request; user None is the system itself (evaluation, benchmarks)."""
    conditions, params = [], []
    visible, visible_params = _visibility_part(user, knowledge_bases)
    filtered, filter_params = _filters_part(filters)
    for part_conditions, part_params in (
        _review_part(),
        (visible, visible_params),
        (filtered, filter_params),
    ):
        conditions += part_conditions
        params += part_params
    if not conditions:
        return DocumentScope()
    return DocumentScope(
        " AND ".join(f"({c})" for c in conditions),
        params,
        visible_sql=" AND ".join(f"({c})" for c in visible),
        visible_params=list(visible_params),
        filter_sql=" AND ".join(f"({c})" for c in filtered),
        filter_params=list(filter_params),
    )
