from django.contrib import admin

from retrieval.models import RerankerModel


@admin.register(RerankerModel)
class RerankerModelAdmin(admin.ModelAdmin):
    list_display = ("id", "knowledge_base", "status", "progress", "is_active", "created_at")
    list_filter = ("status", "is_active")
    readonly_fields = ("metrics", "card", "created_at", "updated_at")
