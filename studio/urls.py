from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("generate/", views.generate, name="generate"),
    path("generate/options/", views.form_options, name="form_options"),
    path("clips/<int:pk>/", views.clip_detail, name="clip_detail"),
    path("clips/<int:pk>/card/", views.clip_card, name="clip_card"),
    path("clips/<int:pk>/continue/", views.continue_clip, name="continue_clip"),
    path("clips/<int:pk>/retry/", views.retry_clip, name="retry_clip"),
    path("clips/<int:pk>/cancel/", views.cancel_clip, name="cancel_clip"),
    path("clips/<int:pk>/chain/", views.chain_view, name="chain_view"),
    path("clips/<int:pk>/chain/export/", views.start_chain_export, name="start_chain_export"),
    path("clips/<int:pk>/use-take/", views.choose_take, name="choose_take"),
    path("clips/<int:pk>/again/", views.generate_again, name="generate_again"),
    path("clips/<int:pk>/remix/", views.remix_clip, name="remix_clip"),
    path("clips/<int:pk>/delete/", views.delete_clip, name="delete_clip"),
    path("exports/<int:pk>/", views.chain_export, name="chain_export"),
    path("exports/<int:pk>/chain.mp4", views.chain_export_file, name="chain_export_file"),
    path("clips/<int:pk>/video.mp4", views.clip_video, name="clip_video"),
    path("clips/<int:pk>/thumbnail.jpg", views.clip_thumbnail, name="clip_thumbnail"),
    path("assets/<int:pk>/", views.asset_file, name="asset_file"),
    path("assets/<int:pk>/poster.jpg", views.asset_poster, name="asset_poster"),
    path("inputs/", views.add_input, name="add_input"),
    path("inputs/<int:pk>/", views.held_input, name="held_input"),
    path("p/<str:token>/<str:name>", views.published_file, name="published_file"),
    path("providers/", views.providers_page, name="providers"),
    path("providers/refresh/", views.refresh_models, name="refresh_models"),
    path("providers/<str:name>/key/", views.provider_key, name="provider_key"),
    path("hooks/<str:provider>/<str:token>/", views.provider_webhook, name="provider_webhook"),
    path("setup/", views.setup, name="setup"),
    path("accounts/login/", views.StudioLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
]
