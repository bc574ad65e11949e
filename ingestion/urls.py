from django.urls import path

from ingestion import views

urlpatterns = [
    path("kb/", views.kb_list, name="kb_list"),
    path("kb/<int:pk>/", views.kb_detail, name="kb_detail"),
    path("kb/<int:pk>/settings/", views.kb_settings, name="kb_settings"),
    path("kb/<int:pk>/delete/", views.kb_delete, name="kb_delete"),
    path("kb/<int:pk>/members/", views.kb_members, name="kb_members"),
    path(
        "kb/<int:pk>/members/<int:member_pk>/remove",
        views.kb_member_remove,
        name="kb_member_remove",
    ),
    path(
        "kb/<int:pk>/members/groups/<int:grant_pk>/remove",
        views.kb_group_remove,
        name="kb_group_remove",
    ),
    path("kb/<int:pk>/thresholds", views.kb_thresholds, name="kb_thresholds"),
    path("kb/<int:pk>/documents.json", views.kb_documents, name="kb_documents"),
    path("kb/<int:pk>/documents/bulk", views.kb_documents_bulk, name="kb_documents_bulk"),
    path("kb/<int:pk>/upload", views.kb_upload, name="kb_upload"),
    path("kb/<int:pk>/add-url", views.kb_add_url, name="kb_add_url"),
    path("kb/<int:pk>/review/", views.kb_review, name="kb_review"),
    path("documents/<int:pk>/approve", views.document_approve_view, name="document_approve"),
    path("documents/<int:pk>/reject", views.document_reject_view, name="document_reject"),
    path("documents/<int:pk>/retry", views.document_retry, name="document_retry"),
    path("documents/<int:pk>/delete", views.document_remove, name="document_delete"),
    path("documents/<int:pk>/file", views.document_file, name="document_file"),
    path("documents/<int:pk>/view", views.document_view, name="document_view"),
    path("documents/<int:pk>/pdf", views.document_pdf, name="document_pdf"),
    path("documents/<int:pk>/visibility", views.document_visibility, name="document_visibility"),
    path("documents/<int:pk>/metadata", views.document_metadata, name="document_metadata"),
    path("documents/<int:pk>/chunks/add", views.chunk_add_view, name="chunk_add"),
    path("chunks/<int:pk>/edit", views.chunk_edit_view, name="chunk_edit"),
    path("chunks/<int:pk>/delete", views.chunk_delete_view, name="chunk_delete"),
]
