from celery import shared_task


@shared_task(name="ragapp.ping")
def ping(value: str = "pong") -> str:
    """A no-op round trip through the broker and a worker (health checks and tests)."""
    return value
