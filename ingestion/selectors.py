"""Reads of knowledge, always scoped by what the user may see."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.utils.translation import gettext as _

from ingestion.models import Chunk, Document, KnowledgeBase


def knowledge_bases_for(*, user, write: bool = False):
    qs = KnowledgeBase.objects.all()
    return qs.editable_by(user) if write else qs.readable_by(user)


def knowledge_base_get(*, user, pk: int, write: bool = False, owner: bool = False) -> KnowledgeBase:
    """The knowledge base, or 404 whether it does not exist or the user may not see it.

    With owner=True a member who may read it but does not own it gets PermissionDenied (403)
    instead: they know it exists, and "not found" would only confuse them.
    """
    qs = (
        KnowledgeBase.objects.owned_by(user)
        if owner
        else knowledge_bases_for(user=user, write=write)
    )
    try:
        return qs.get(pk=pk)
    except KnowledgeBase.DoesNotExist:
        if owner and knowledge_bases_for(user=user).filter(pk=pk).exists():
            raise PermissionDenied(
                _("Only the owners of this knowledge base can do this.")
            ) from None
        raise Http404("No such knowledge base.") from None
    except (ValueError, TypeError):
        raise Http404("No such knowledge base.") from None


def documents_for(*, user):
    return Document.objects.filter(knowledge_base__in=knowledge_bases_for(user=user))


def document_get(*, user, pk: int, write: bool = False) -> Document:
    qs = Document.objects.filter(knowledge_base__in=knowledge_bases_for(user=user, write=write))
    try:
        return qs.select_related("knowledge_base").get(pk=pk)
    except (Document.DoesNotExist, ValueError, TypeError):
        raise Http404("No such document.") from None


def chunks_for(*, user):
    return Chunk.objects.filter(knowledge_base__in=knowledge_bases_for(user=user))
