"""URLs of the example: the admin, a form that sends a job, and its status page."""

from django.contrib import admin
from django.urls import path
from shop import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", views.start, name="start"),
    path("jobs/<str:job_id>/", views.job_page, name="job"),
    path("jobs/<str:job_id>.json", views.job_json, name="job-json"),
]
