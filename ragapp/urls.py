from django.contrib import admin
from django.urls import include, path

from ragapp import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    path("", include("ingestion.urls")),
    path("", include("chat.urls")),
    path("", views.home, name="home"),
]
