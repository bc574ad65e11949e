import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragapp.settings")

app = Celery("ragapp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Worker processes load the models before their first task (ragapp.warmup).
from ragapp.warmup import connect_worker_signals  # noqa: E402

connect_worker_signals()
