"""The documents list at ten thousand documents (issue #15 part 3): a knowledge base's
documents read in index order, newest first or by name, stopped at the page."""

import django.db.models.functions.text
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("ingestion", "0010_chunk_kind_faq"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="document",
            index=models.Index(
                fields=["knowledge_base", "-created_at", "-id"], name="document_kb_created"
            ),
        ),
        migrations.AddIndex(
            model_name="document",
            index=models.Index(
                models.F("knowledge_base"),
                django.db.models.functions.text.Lower("original_name"),
                models.F("id"),
                name="document_kb_name",
            ),
        ),
    ]
