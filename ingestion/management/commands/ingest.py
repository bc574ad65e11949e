"""manage.py ingest --kb NAME [--owner USERNAME] [--tag T]... [--meta KEY=VALUE]... PATH...

Imports files and folders (recursively) through the same Celery pipeline as the upload
portal, shows progress until every document is ready or failed, then lists the failures.
Every imported document gets the tags and metadata given (numbers become numbers, dates stay
"YYYY-MM-DD" strings). Exit status 0 when the pipeline ran (even if some files failed), 1
when it could not run.
"""

from __future__ import annotations

import time
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from ingestion.documents import InvalidMetadata, clean_tags, parse_meta_lines
from ingestion.models import Document, DocumentStatus, KnowledgeBase
from ingestion.services import documents_upload


def iter_files(paths: list[str]):
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
            )
        elif path.is_file():
            yield path
        else:
            raise CommandError(f"{raw}: no such file or directory")


def require_worker(timeout: float = 3.0) -> None:
    from ragapp.health import check_broker, check_worker

    ok, detail = check_broker()
    if not ok:
        raise CommandError(
            f"cannot reach the Celery broker ({detail}). Is `make services` running?"
        )
    ok, detail = check_worker(timeout=timeout)
    if not ok:
        raise CommandError(
            f"{detail}: start one with `make run`, or "
            "`.venv/bin/celery -A ragapp worker -Q celery,ingestion,training`."
        )


def wait_for_documents(documents: list[Document], *, stdout, poll: float = 0.5, timeout=None):
    """Progress bar over the documents' own progress until all are ready or failed."""
    ids = [d.pk for d in documents]
    done_states = {DocumentStatus.READY, DocumentStatus.FAILED}
    started = time.monotonic()
    with tqdm(total=100 * len(ids), unit="%", file=stdout, dynamic_ncols=True) as bar:
        while True:
            rows = list(Document.objects.filter(pk__in=ids).values_list("status", "progress"))
            total = sum(100 if s in done_states else p for s, p in rows)
            finished = sum(1 for s, _ in rows if s in done_states)
            bar.n = total
            bar.set_description(f"{finished}/{len(ids)} documents")
            bar.refresh()
            if finished == len(rows):
                return
            if timeout is not None and time.monotonic() - started > timeout:
                raise CommandError("timed out waiting for the worker")
            time.sleep(poll)


def _opened(paths):
    """(name, open file) for each path, each closed once the upload loop has read it."""
    for path in paths:
        with open(path, "rb") as handle:
            yield path.name, handle


class Command(BaseCommand):
    help = "Import files and folders into a knowledge base through the ingestion pipeline."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", metavar="PATH")
        parser.add_argument("--kb", required=True, help="knowledge base name (created if missing)")
        parser.add_argument("--owner", help="owner username (default: the first superuser)")
        parser.add_argument("--no-wait", action="store_true", help="queue and return at once")
        parser.add_argument("--timeout", type=float, default=None, help="give up after N seconds")
        parser.add_argument(
            "--tag", action="append", default=[], dest="tags", help="a tag (repeatable)"
        )
        parser.add_argument(
            "--meta",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a metadata pair (repeatable); numbers are stored as numbers",
        )

    def handle(self, *args, **options):
        try:
            tags, meta = clean_tags(options["tags"]), parse_meta_lines(options["meta"])
        except InvalidMetadata as exc:
            raise CommandError(str(exc)) from exc
        User = get_user_model()
        if options["owner"]:
            owner = User.objects.filter(username=options["owner"]).first()
            if owner is None:
                raise CommandError(f"no user named {options['owner']!r}")
        else:
            owner = User.objects.filter(is_superuser=True).order_by("pk").first()
            if owner is None:
                raise CommandError("no superuser exists: create one or pass --owner")
        files = list(iter_files(options["paths"]))
        if not files:
            raise CommandError("no files found")
        require_worker()

        kb = KnowledgeBase.objects.filter(name=options["kb"], owner=owner).first()
        if kb is None:
            kb = KnowledgeBase.objects.create(name=options["kb"], owner=owner)
            self.stdout.write(f"Created knowledge base {kb.name!r} (id {kb.pk}).")

        documents, refused = [], []
        for outcome in documents_upload(
            knowledge_base=kb,
            files=_opened(files),
            uploaded_by=owner,
            tags=tags,
            meta=meta,
            audit_details={"via": "manage.py ingest"},
        ):
            if outcome.accepted:
                documents.append(outcome.document)
            elif outcome.reason == "duplicate":
                self.stdout.write(f"skipped {outcome.name}: {outcome.error}")
            else:
                refused.append(outcome.error)
        self.stdout.write(f"Queued {len(documents)} document(s) into {kb.name!r}.")
        if options["no_wait"] or not documents:
            self._report([], refused)
            return
        wait_for_documents(documents, stdout=self.stdout, timeout=options["timeout"])
        failed = Document.objects.filter(
            pk__in=[d.pk for d in documents], status=DocumentStatus.FAILED
        ).order_by("original_name")
        ready = len(documents) - failed.count()
        self.stdout.write(f"{ready} ready, {failed.count()} failed, {len(refused)} refused.")
        self._report(failed, refused)

    def _report(self, failed, refused):
        for message in refused:
            self.stdout.write(f"REFUSED {message}")
        for document in failed:
            self.stdout.write(f"FAILED {document.original_name}: {document.error}")
