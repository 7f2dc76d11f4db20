from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path, register_converter
from django.urls.converters import get_converters

from . import views


class IdConverter:
    """A row id in a path: ASCII digits, at most 18 of them. `<int:...>` takes any length,
    and a number past what a database integer holds is a 500 on some backends (SQLite's
    OverflowError) and never a row: such a path is simply not found."""

    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value) -> str:
        return str(value)


if "id" not in get_converters():  # a test that reloads this module registers it once
    register_converter(IdConverter, "id")

urlpatterns = [
    path("", views.home, name="home"),
    path("generate/", views.generate, name="generate"),
    path("generate/options/", views.form_options, name="form_options"),
    path("clips/<id:pk>/", views.clip_detail, name="clip_detail"),
    path("clips/<id:pk>/card/", views.clip_card, name="clip_card"),
    path("clips/<id:pk>/continue/", views.continue_clip, name="continue_clip"),
    path("clips/<id:pk>/retry/", views.retry_clip, name="retry_clip"),
    path("clips/<id:pk>/cancel/", views.cancel_clip, name="cancel_clip"),
    path("clips/<id:pk>/send-again/", views.send_again, name="send_again"),
    path("clips/<id:pk>/chain/", views.chain_view, name="chain_view"),
    path("clips/<id:pk>/chain/export/", views.start_chain_export, name="start_chain_export"),
    path("clips/<id:pk>/chain/live/", views.chain_live, name="chain_live"),
    path("clips/<id:pk>/chain/card/", views.chain_card, name="chain_card"),
    path("clips/<id:pk>/chain/title/", views.chain_title, name="chain_title"),
    path("clips/<id:pk>/chain/again/", views.chain_generate_again, name="chain_generate_again"),
    path("clips/<id:pk>/chain/retry/", views.chain_retry, name="chain_retry"),
    path("clips/<id:pk>/chain/continue/", views.chain_continue, name="chain_continue"),
    path("clips/<id:pk>/use-take/", views.choose_take, name="choose_take"),
    path("clips/<id:pk>/again/", views.generate_again, name="generate_again"),
    path("clips/<id:pk>/remix/", views.remix_clip, name="remix_clip"),
    path("clips/<id:pk>/delete/", views.delete_clip, name="delete_clip"),
    path("exports/<id:pk>/", views.chain_export, name="chain_export"),
    path("exports/<id:pk>/chain.mp4", views.chain_export_file, name="chain_export_file"),
    path("clips/<id:pk>/video.mp4", views.clip_video, name="clip_video"),
    path("clips/<id:pk>/thumbnail.jpg", views.clip_thumbnail, name="clip_thumbnail"),
    path("clips/<id:pk>/played.mp4", views.clip_played_video, name="clip_played_video"),
    path("clips/<id:pk>/strip/<id:index>.jpg", views.clip_strip_frame, name="clip_strip_frame"),
    path("clips/<id:pk>/seam/<str:side>.jpg", views.clip_seam_image, name="clip_seam_image"),
    path("clips/<id:pk>/colour/", views.clip_colour, name="clip_colour"),
    path("clips/<id:pk>/chain/colour/", views.chain_colour, name="chain_colour"),
    path("assets/<id:pk>/", views.asset_file, name="asset_file"),
    path("assets/<id:pk>/poster.jpg", views.asset_poster, name="asset_poster"),
    path("inputs/", views.add_input, name="add_input"),
    path("inputs/<id:pk>/", views.held_input, name="held_input"),
    path("p/<str:token>/<str:name>", views.published_file, name="published_file"),
    path("providers/", views.providers_page, name="providers"),
    path("providers/refresh/", views.refresh_models, name="refresh_models"),
    path("providers/<str:name>/key/", views.provider_key, name="provider_key"),
    path("hooks/<str:provider>/<str:token>/", views.provider_webhook, name="provider_webhook"),
    path("account/", views.account, name="account"),
    path("setup/", views.setup, name="setup"),
    path("accounts/login/", views.StudioLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
]
