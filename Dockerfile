FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 LC_ALL=C.UTF-8 \
    UNSTRUCTURED_DISABLE_NOTICE=1 DO_NOT_TRACK=true
RUN apt-get update && apt-get install -y --no-install-recommends \
        tesseract-ocr tesseract-ocr-chi-sim libmagic1 libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ragapp ragapp
COPY ingestion ingestion
COPY retrieval retrieval
COPY chat chat
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
    && pip install --no-cache-dir . build && python -m ragapp.offline_setup
COPY . .
RUN RAG_ENV=development python manage.py collectstatic --noinput
RUN useradd --create-home app && mkdir -p /data/media && chown app /data/media
USER app
EXPOSE 8000
CMD ["gunicorn", "ragapp.wsgi", "--bind", "0.0.0.0:8000", "--worker-class", "gthread", "--workers", "3", "--threads", "8"]
