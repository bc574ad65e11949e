from django.urls import include, path

urlpatterns = [
    path("", include("curation.faq_views")),
    path("", include("curation.gap_views")),
    path("", include("curation.case_views")),
    path("", include("curation.share_views")),
]
