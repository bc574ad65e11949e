from django.urls import path

from retrieval import views

urlpatterns = [
    path("kb/<int:pk>/hit-test/", views.hit_test, name="hit_test"),
    path("kb/<int:pk>/reranker/", views.kb_reranker, name="kb_reranker"),
]
