"""{% review_queue_size kb user as pending %}: the number of contributions waiting for review
when `user` reviews in `kb` (editors and owners), else None; the knowledge base tabs show it."""

from django import template

from ingestion.review import can_review, pending_documents

register = template.Library()


@register.simple_tag
def review_queue_size(kb, user):
    if kb is None or user is None or not can_review(knowledge_base=kb, user=user):
        return None
    return pending_documents(knowledge_base=kb, reviewer=user).count()
