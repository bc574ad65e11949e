"""Audit records (ragapp.audit) of curation's changes: FAQ entries added, changed, deleted
and imported, share links created and revoked. The pages and the API call these inside the
transaction of the change, as ragapp.audit asks, so a change never lands without its record.
"""

from __future__ import annotations

from ragapp.audit import audit_record

# An FAQ answer holds up to 10,000 characters: the record keeps enough to recognise it.
TEXT_KEPT = 300


def _short(text: str) -> str:
    return text if len(text) <= TEXT_KEPT else text[:TEXT_KEPT] + "…"


def audit_faq_add(*, request, entry) -> None:
    audit_record(
        request=request,
        action="faq.add",
        obj=entry,
        details={"question": entry.question, "answer": _short(entry.answer)},
    )


def audit_faq_change(*, request, entry, before: dict[str, str]) -> None:
    """`before`: the fields' values before the change ({"question": ..., "answer": ...});
    nothing is recorded when none changed."""
    changed = {
        name: [_short(old), _short(getattr(entry, name))]
        for name, old in before.items()
        if getattr(entry, name) != old
    }
    if changed:
        audit_record(request=request, action="faq.change", obj=entry, details={"changed": changed})


def audit_faq_import(*, request, knowledge_base, result) -> None:
    """One record per CSV file (curation.faq.CsvImport), when it added entries."""
    if result.added:
        audit_record(
            request=request,
            action="faq.import",
            obj=knowledge_base,
            knowledge_base=knowledge_base,
            details={
                "added": len(result.added),
                "ids": [e.pk for e in result.added],
                "refused_rows": [n for n, _message in result.errors],
            },
        )


def audit_share_link_create(*, request, link, knowledge_base) -> None:
    """`knowledge_base`: the one whose page (or API path) published the link; the details
    name all that it answers from."""
    audit_record(
        request=request,
        action="share_link.create",
        obj=link,
        knowledge_base=knowledge_base,
        details={
            "knowledge_bases": sorted(kb.pk for kb in link.knowledge_bases.all()),
            "login_required": link.login_required,
            "allowed_origins": list(link.allowed_origins),
            "rate_limit_per_hour": link.rate_limit_per_hour,
        },
    )


def audit_share_link_revoke(*, request, link, knowledge_base=None) -> None:
    """`knowledge_base`: the page's; from the API (no page), the link's first."""
    kb_ids = sorted(kb.pk for kb in link.knowledge_bases.all())
    if knowledge_base is None and kb_ids:
        knowledge_base = kb_ids[0]
    audit_record(
        request=request,
        action="share_link.revoke",
        obj=link,
        knowledge_base=knowledge_base,
        details={"knowledge_bases": kb_ids},
    )
