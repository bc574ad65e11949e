from django.apps import AppConfig


class RagappConfig(AppConfig):
    name = "ragapp"
    verbose_name = "RAG application"

    def ready(self):
        # Connects the sign-in / sign-out receivers of the audit log.
        from ragapp import audit  # noqa: F401
