from django.apps import AppConfig


class IngestionConfig(AppConfig):
    name = "ingestion"
    verbose_name = "Knowledge bases and ingestion"

    def ready(self) -> None:
        from celery.signals import worker_init, worker_ready
        from django.db.models.signals import post_migrate

        from ingestion import checks  # noqa: F401  (registers the system checks)

        post_migrate.connect(_ensure_indexes_after_migrate, sender=self)
        # Only worker processes send worker_ready: each of them sweeps for documents whose
        # worker died mid-way (see ingestion.tasks.start_stale_sweeper).
        worker_ready.connect(_start_stale_sweeper, weak=False, dispatch_uid="ingest-stale-sweep")
        worker_init.connect(_share_cores, weak=False, dispatch_uid="ingest-share-cores")


def _ensure_indexes_after_migrate(sender, using="default", **kwargs) -> None:
    from ingestion.vector_indexes import ensure_vector_indexes

    ensure_vector_indexes(using=using)


def _start_stale_sweeper(sender=None, **kwargs) -> None:
    from ingestion.tasks import start_stale_sweeper

    start_stale_sweeper()


def _share_cores(sender=None, **kwargs) -> None:
    from ingestion.tasks import share_cores_between_processes

    share_cores_between_processes(sender=sender)
