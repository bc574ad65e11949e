from django.contrib import admin

from retrieval.models import KeywordStats, LexemeStats, RerankerModel


@admin.register(RerankerModel)
class RerankerModelAdmin(admin.ModelAdmin):
    list_display = ("id", "knowledge_base", "status", "progress", "is_active", "created_at")
    list_filter = ("status", "is_active")
    readonly_fields = ("metrics", "card", "created_at", "updated_at")


class _TriggerMaintained(admin.ModelAdmin):
    """Kept by database triggers (retrieval migration 0002): shown for inspection only."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(KeywordStats)
class KeywordStatsAdmin(_TriggerMaintained):
    list_display = ("knowledge_base_id", "chunks", "total_length")


@admin.register(LexemeStats)
class LexemeStatsAdmin(_TriggerMaintained):
    list_display = ("knowledge_base_id", "lexeme", "df", "max_tf")
    list_filter = ("knowledge_base_id",)
    search_fields = ("lexeme",)
