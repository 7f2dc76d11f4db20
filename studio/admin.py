from django.contrib import admin

from .models import Asset, Clip, ModelOverride


@admin.register(Clip)
class ClipAdmin(admin.ModelAdmin):
    list_display = ("pk", "owner", "model_label", "status", "duration", "aspect_ratio", "created_at")
    list_filter = ("status", "provider")
    search_fields = ("prompt", "remote_id")
    raw_id_fields = ("parent", "first_frame", "last_frame")
    readonly_fields = ("webhook_token", "storage_key", "remote_result")


@admin.register(Asset)
class AssetAdmin(admin.ModelAdmin):
    list_display = ("pk", "owner", "kind", "source", "original_name", "width", "height", "created_at")
    list_filter = ("kind", "source")
    readonly_fields = ("public_token", "storage_key")


@admin.register(ModelOverride)
class ModelOverrideAdmin(admin.ModelAdmin):
    """Per model, what the provider's list does not say: whether it takes reference images,
    and whether a last frame may go without a first frame."""

    list_display = ("provider", "model_key", "reference_images", "max_reference_images", "last_frame_alone")
    list_filter = ("provider",)
    search_fields = ("model_key", "note")
