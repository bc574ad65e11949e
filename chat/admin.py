from django.contrib import admin

from chat.models import Conversation, Feedback, Message


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    fields = ("role", "mode", "content", "created_at")
    readonly_fields = fields
    can_delete = False
    show_change_link = True


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("__str__", "user", "created_at", "updated_at")
    list_filter = ("created_at",)
    search_fields = ("title", "user__username")
    raw_id_fields = ("user",)
    filter_horizontal = ("knowledge_bases",)
    date_hierarchy = "created_at"
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("__str__", "conversation", "role", "mode", "created_at")
    list_filter = ("role", "mode", "created_at")
    search_fields = ("content", "question", "standalone_question", "error")
    raw_id_fields = ("conversation",)
    readonly_fields = ("sources", "unverified", "timings", "usage", "created_at")
    date_hierarchy = "created_at"


@admin.register(Feedback)
class FeedbackAdmin(admin.ModelAdmin):
    list_display = ("message", "user", "rating", "comment", "created_at")
    list_filter = ("rating", "created_at")
    search_fields = ("comment", "message__content", "user__username")
    raw_id_fields = ("message", "user")
