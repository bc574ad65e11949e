"""Pages of this part of curation (their URL patterns are at the bottom): a knowledge base's
FAQ entries for its owners and editors (list, add, CSV import, edit, delete), and "Save as
FAQ" on a chat answer."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from chat.models import Message
from curation.audit import audit_faq_add, audit_faq_change, audit_faq_import
from curation.faq import (
    ANSWER_MAX_CHARS,
    QUESTION_MAX_CHARS,
    FaqError,
    faq_add,
    faq_delete,
    faq_entry_get,
    faq_import_csv,
    faq_knowledge_base_get,
    faq_update,
)
from ingestion.selectors import knowledge_bases_for
from ragapp.audit import audit_record


class FaqForm(forms.Form):
    question = forms.CharField(label=gettext_lazy("Question"), max_length=QUESTION_MAX_CHARS)
    answer = forms.CharField(
        label=gettext_lazy("Answer"),
        max_length=ANSWER_MAX_CHARS,
        widget=forms.Textarea(attrs={"rows": 5}),
    )


class FaqImportForm(forms.Form):
    file = forms.FileField(label=gettext_lazy("CSV file (question,answer)"))


@login_required
def kb_faqs(request, pk: int):
    kb = faq_knowledge_base_get(user=request.user, pk=pk, write=True)
    form = FaqForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():
                entry = faq_add(knowledge_base=kb, user=request.user, **form.cleaned_data)
                audit_faq_add(request=request, entry=entry)
        except FaqError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, _("FAQ entry added."))
            return redirect("kb_faqs", pk=kb.pk)
    return render(
        request,
        "curation/faq_list.html",
        {
            "kb": kb,
            "form": form,
            "import_form": FaqImportForm(),
            "entries": kb.faq_entries.select_related("created_by"),
            "is_owner": kb.role_of(request.user) == "owner",
        },
    )


@login_required
@require_POST
def kb_faq_import(request, pk: int):
    kb = faq_knowledge_base_get(user=request.user, pk=pk, write=True)
    form = FaqImportForm(request.POST, request.FILES)
    if not form.is_valid():
        messages.error(request, _("Choose a CSV file to import."))
        return redirect("kb_faqs", pk=kb.pk)
    try:
        with transaction.atomic():
            result = faq_import_csv(
                knowledge_base=kb, data=form.cleaned_data["file"].read(), user=request.user
            )
            audit_faq_import(request=request, knowledge_base=kb, result=result)
    except FaqError as exc:
        messages.error(request, str(exc))
        return redirect("kb_faqs", pk=kb.pk)
    messages.success(request, _("%(n)d FAQ entries imported.") % {"n": len(result.added)})
    for row, message in result.errors[:20]:
        messages.warning(request, _("Row %(row)d: %(message)s") % {"row": row, "message": message})
    if len(result.errors) > 20:
        messages.warning(
            request, _("%(n)d more rows were refused.") % {"n": len(result.errors) - 20}
        )
    return redirect("kb_faqs", pk=kb.pk)


@login_required
def faq_edit(request, pk: int):
    entry = faq_entry_get(user=request.user, pk=pk, write=True)
    initial = {"question": entry.question, "answer": entry.answer}
    form = FaqForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():
                before = {"question": entry.question, "answer": entry.answer}
                faq_update(entry=entry, **form.cleaned_data)
                audit_faq_change(request=request, entry=entry, before=before)
        except FaqError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, _("FAQ entry saved."))
            return redirect("kb_faqs", pk=entry.knowledge_base_id)
    return render(
        request,
        "curation/faq_edit.html",
        {"kb": entry.knowledge_base, "entry": entry, "form": form},
    )


@login_required
@require_POST
def faq_delete_view(request, pk: int):
    entry = faq_entry_get(user=request.user, pk=pk, write=True)
    kb_id = entry.knowledge_base_id
    with transaction.atomic():
        audit_record(request=request, action="faq.delete", obj=entry)
        faq_delete(entry=entry)
    messages.success(request, _("FAQ entry deleted."))
    return redirect("kb_faqs", pk=kb_id)


@login_required
@require_POST
def faq_from_message(request, pk: int):
    """Save a chat answer, as corrected in the chat's small form, as an FAQ entry of one of
    the conversation's knowledge bases that the user edits. JSON for the chat's script."""
    message = get_object_or_404(
        Message,
        pk=pk,
        role=Message.Role.ASSISTANT,
        conversation__user=request.user,
    )
    editable = knowledge_bases_for(user=request.user, write=True).filter(
        pk__in=message.conversation.knowledge_bases.values("pk")
    )
    kb_id = request.POST.get("knowledge_base") or ""
    kb = editable.filter(pk=int(kb_id)).first() if kb_id.isdigit() else editable.first()
    if kb is None:
        raise Http404("No knowledge base of this conversation that you edit.")
    form = FaqForm(request.POST)
    if not form.is_valid():
        return JsonResponse(
            {"error": _("An FAQ entry needs a question and an answer.")}, status=422
        )
    try:
        with transaction.atomic():
            entry = faq_add(
                knowledge_base=kb, user=request.user, source_message=message, **form.cleaned_data
            )
            audit_faq_add(request=request, entry=entry)
    except FaqError as exc:
        return JsonResponse({"error": str(exc)}, status=422)
    return JsonResponse(
        {"id": entry.pk, "knowledge_base": kb.pk, "message": _("Saved as an FAQ entry.")},
        status=201,
    )


urlpatterns = [
    path("kb/<int:pk>/faqs/", kb_faqs, name="kb_faqs"),
    path("kb/<int:pk>/faqs/import", kb_faq_import, name="kb_faq_import"),
    path("faqs/<int:pk>/edit", faq_edit, name="faq_edit"),
    path("faqs/<int:pk>/delete", faq_delete_view, name="faq_delete"),
    path("chat/messages/<int:pk>/faq", faq_from_message, name="faq_from_message"),
]
