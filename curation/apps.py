from django.apps import AppConfig


class CurationConfig(AppConfig):
    """How owners improve a knowledge base from what people ask: FAQ answers, knowledge
    gaps, saved test cases with their regression runs, and share links."""

    name = "curation"
    verbose_name = "Curation"
