from django.urls import path

from chat import views

urlpatterns = [
    path("chat/", views.chat_page, name="chat"),
    path("chat/<int:pk>/", views.chat_page, name="chat_conversation"),
    path("chat/ask", views.ask_stream, name="chat_ask"),
    path("chat/<int:pk>/rename", views.conversation_rename, name="conversation_rename"),
    path("chat/<int:pk>/delete", views.conversation_delete, name="conversation_delete"),
    path("chat/<int:pk>/truncate", views.conversation_truncate_view, name="conversation_truncate"),
    path("chat/<int:pk>.json", views.conversation_json, name="conversation_json"),
    path("chat/messages/<int:pk>/feedback", views.feedback, name="message_feedback"),
]
