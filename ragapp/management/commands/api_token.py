"""manage.py api_token USERNAME [--name NAME]: create a personal API token and print it."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from ragapp.audit import audit_record
from ragapp.models import ApiToken


class Command(BaseCommand):
    help = "Create an API token for a user and print it (it is stored hashed, shown once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="command line")

    def handle(self, *args, **options):
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"no user named {options['username']!r}")
        with transaction.atomic():
            token, raw = ApiToken.issue(user, options["name"])
            audit_record(action="token.create", obj=token, details={"via": "manage.py"})
        self.stdout.write(raw)
