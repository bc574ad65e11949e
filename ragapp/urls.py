from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from ragapp import views
from ragapp.api import api, openai_compat
from ragapp.forms import ThrottledPasswordResetForm

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("warmup.json", views.warmup_status, name="warmup_status"),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path("v1/models", openai_compat.models, name="openai_models"),
    path("v1/chat/completions", openai_compat.chat_completions, name="openai_chat"),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/tokens/", views.api_tokens, name="api_tokens"),
    path(
        "accounts/password_reset/",
        auth_views.PasswordResetView.as_view(form_class=ThrottledPasswordResetForm),
        name="password_reset",
    ),
    path("accounts/", include("django.contrib.auth.urls")),
    path("oidc/", include("ragapp.oidc")),  # single sign-on; 404 unless RAG_OIDC_* is set
    path("i18n/", include("django.conf.urls.i18n")),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("audit/", views.audit_log, name="audit_log"),
    path("audit/export.csv", views.audit_export, name="audit_export"),
    path("kb/<int:pk>/dashboard/", views.kb_dashboard, name="kb_dashboard"),
    path("kb/<int:pk>/qa-pairs", views.kb_qa_pairs, name="kb_qa_pairs"),
    path("", include("ingestion.urls")),
    path("", include("retrieval.urls")),
    path("", include("chat.urls")),
    path("", include("curation.urls")),
    path("", views.home, name="home"),
]

# Bodies over Django's request limits (size, number of files or fields) are 413, not 400.
handler400 = "ragapp.errors.bad_request"
