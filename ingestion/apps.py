from django.apps import AppConfig


class IngestionConfig(AppConfig):
    name = "ingestion"
    verbose_name = "Knowledge bases and ingestion"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from ingestion import checks  # noqa: F401  (registers the system checks)

        post_migrate.connect(_ensure_indexes_after_migrate, sender=self)


def _ensure_indexes_after_migrate(sender, using="default", **kwargs) -> None:
    from ingestion.vector_indexes import ensure_vector_indexes

    ensure_vector_indexes(using=using)
