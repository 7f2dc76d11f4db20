from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("generate/", views.generate, name="generate"),
    path("generate/options/", views.form_options, name="form_options"),
    path("generating/", views.generating_count, name="generating_count"),
    path("clips/<int:pk>/", views.clip_detail, name="clip_detail"),
    path("clips/<int:pk>/card/", views.clip_card, name="clip_card"),
    path("clips/<int:pk>/continue/", views.continue_clip, name="continue_clip"),
    path("clips/<int:pk>/retry/", views.retry_clip, name="retry_clip"),
    path("clips/<int:pk>/video.mp4", views.clip_video, name="clip_video"),
    path("clips/<int:pk>/thumbnail.jpg", views.clip_thumbnail, name="clip_thumbnail"),
    path("assets/<int:pk>/", views.asset_file, name="asset_file"),
    path("p/<str:token>/<str:name>", views.published_file, name="published_file"),
    path("providers/", views.providers_page, name="providers"),
    path("hooks/pictory/<str:token>/", views.pictory_webhook, name="pictory_webhook"),
    path("setup/", views.setup, name="setup"),
    path("accounts/login/", views.StudioLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
]
