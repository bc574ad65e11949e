"""{% faq_knowledge_bases user as ids %}: the ids ("1,5") of the knowledge bases whose FAQ
`user` writes (owners and editors); the chat offers "Save as FAQ" on answers from those."""

from django import template

from ingestion.selectors import knowledge_bases_for

register = template.Library()


@register.simple_tag
def faq_knowledge_bases(user) -> str:
    if user is None or not user.is_authenticated:
        return ""
    ids = knowledge_bases_for(user=user, write=True).values_list("pk", flat=True)
    return ",".join(str(pk) for pk in ids)
