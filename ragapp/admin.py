from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from ragapp.models import ApiToken, AuditEvent, User


class ApiTokenInline(admin.TabularInline):
    model = ApiToken
    extra = 0
    fields = ("name", "key_prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("key_prefix", "created_at", "last_used_at")
    can_delete = False


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    inlines = [ApiTokenInline]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are issued through the API (the raw token is shown once); here they are only
    looked at and revoked, so the hash can never be edited."""

    list_display = ("key_prefix", "name", "user", "created_at", "last_used_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "created_at")
    search_fields = ("name", "key_prefix", "user__username")
    readonly_fields = ("user", "key_prefix", "key_hash", "created_at", "last_used_at")
    list_select_related = ("user",)
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the audit log is only appended to, by the application (ragapp.audit)."""

    list_display = ("created_at", "actor_name", "action", "object_label", "knowledge_base_id", "ip")
    list_filter = ("action", "created_at")
    search_fields = ("actor_name", "object_label", "ip")
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
