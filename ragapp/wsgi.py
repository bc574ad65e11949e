import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragapp.settings")
application = get_wsgi_application()

# Each gunicorn worker imports this module when it boots: load the models now, in the
# background, instead of inside the first request (readiness says "warming" until done).
from ragapp.warmup import start_background_warm_up  # noqa: E402

start_background_warm_up()
