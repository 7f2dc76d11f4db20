"""The generate form, built from one ModelSpec: the spec decides which fields and choices
exist, and the same spec validates the POST, so a hand-made request cannot pass a
combination the model cannot make."""

from __future__ import annotations

from django import forms
from django.contrib.auth.forms import UserCreationForm

from . import media
from .models import Asset, Clip
from .providers import ModelSpec, all_models, enabled_providers, find_model

PROMPT_MIN = 5
PROMPT_MAX = 5000


def model_choices():
    """Models grouped by provider, for the Model select."""
    groups = []
    for provider in enabled_providers():
        models = provider.models()
        if models:
            groups.append((provider.label, [(m.ref, m.label) for m in models]))
    return groups


def default_model() -> ModelSpec | None:
    models = all_models()
    return models[0] if models else None


def duration_label(seconds: int) -> str:
    return f"{seconds} seconds"


class GenerateForm(forms.Form):
    model = forms.ChoiceField(label="Model")
    prompt = forms.CharField(
        label="Prompt",
        widget=forms.Textarea(attrs={"rows": 4, "placeholder": "Describe the shot: who, where, what moves, the light, the camera."}),
        error_messages={"required": "Write a prompt: describe the shot you want."},
    )
    aspect_ratio = forms.ChoiceField(label="Aspect ratio")
    duration = forms.TypedChoiceField(label="Duration", coerce=int)
    resolution = forms.ChoiceField(label="Resolution")
    generate_audio = forms.BooleanField(label="Generate audio", required=False)
    seed = forms.IntegerField(label="Seed", required=False, min_value=0, max_value=2**32 - 1,
                              help_text="The same seed and settings give a similar result.")
    first_frame_upload = forms.FileField(
        label="First frame", required=False,
        widget=forms.ClearableFileInput(attrs={"accept": "image/jpeg,image/png,image/webp"}),
        help_text="Optional. A JPEG, PNG or WebP picture the clip starts from.",
    )
    # An image the studio already holds: an upload kept from an earlier try of this form,
    # or the last frame of the clip being continued.
    first_frame_asset = forms.IntegerField(required=False, widget=forms.HiddenInput)
    parent = forms.IntegerField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, user, spec: ModelSpec | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["model"].choices = model_choices()
        if spec is None:
            ref = self.data.get("model") if self.is_bound else self.initial.get("model")
            spec = find_model(ref) or default_model()
        self.spec = spec
        self._fit_fields_to(spec)
        self.checked_upload = None

    def _fit_fields_to(self, spec: ModelSpec | None) -> None:
        """Keep only the fields this model has, with exactly its choices."""
        if spec is None:
            return
        self.initial.setdefault("model", spec.ref)
        if spec.aspect_ratios:
            self.fields["aspect_ratio"].choices = [(r, r) for r in spec.aspect_ratios]
        else:
            del self.fields["aspect_ratio"]
        if spec.durations:
            self.fields["duration"].choices = [(d, duration_label(d)) for d in spec.durations]
        else:
            del self.fields["duration"]
        if spec.resolutions:
            self.fields["resolution"].choices = [(r, r) for r in spec.resolutions]
        else:
            del self.fields["resolution"]
        if not spec.generate_audio:
            del self.fields["generate_audio"]
        if not spec.seed:
            del self.fields["seed"]
        if not spec.first_frame:
            del self.fields["first_frame_upload"]
            del self.fields["first_frame_asset"]

    # --- Field checks -------------------------------------------------------------------

    def clean_model(self):
        spec = find_model(self.cleaned_data["model"])
        if spec is None or spec != self.spec:
            raise forms.ValidationError("Choose one of the models in the list.")
        return spec.ref

    def clean_prompt(self):
        prompt = self.cleaned_data["prompt"].strip()
        if len(prompt) < PROMPT_MIN:
            raise forms.ValidationError(
                f"Write at least {PROMPT_MIN} characters: describe the shot you want."
            )
        if len(prompt) > PROMPT_MAX:
            raise forms.ValidationError(
                f"Keep the prompt to {PROMPT_MAX:,} characters or fewer (it has {len(prompt):,})."
            )
        return prompt

    def _choice_error(self, what: str, allowed: list[str]) -> forms.ValidationError:
        return forms.ValidationError(
            f"{self.spec.label} cannot make that {what}. Choose one of: {', '.join(allowed)}."
        )

    def clean_aspect_ratio(self):
        value = self.cleaned_data["aspect_ratio"]
        if value not in self.spec.aspect_ratios:
            raise self._choice_error("aspect ratio", list(self.spec.aspect_ratios))
        return value

    def clean_duration(self):
        value = self.cleaned_data["duration"]
        if value not in self.spec.durations:
            raise self._choice_error("duration", [duration_label(d) for d in self.spec.durations])
        return value

    def clean_first_frame_upload(self):
        upload = self.cleaned_data.get("first_frame_upload")
        if not upload:
            return None
        try:
            self.checked_upload = media.check_image(upload.read())
        except media.MediaError as exc:
            raise forms.ValidationError(str(exc))
        return upload

    def clean_first_frame_asset(self):
        pk = self.cleaned_data.get("first_frame_asset")
        if not pk:
            return None
        asset = Asset.objects.filter(pk=pk, owner=self.user, kind=Asset.Kind.IMAGE).first()
        if asset is None:
            raise forms.ValidationError("That first frame is no longer available; choose it again.")
        return asset

    def clean_parent(self):
        pk = self.cleaned_data.get("parent")
        if not pk:
            return None
        parent = Clip.objects.filter(pk=pk, owner=self.user).first()
        if parent is None:
            raise forms.ValidationError("The clip to continue from was not found.")
        if not parent.is_ready:
            raise forms.ValidationError("That clip is not ready yet, so it has no last frame.")
        return parent

    # --- Results ------------------------------------------------------------------------

    def keep_upload(self) -> Asset | None:
        """Save a valid upload as an Asset, even when other fields failed, so the creator
        does not have to choose the file again. Returns the asset, if any."""
        upload = self.cleaned_data.get("first_frame_upload") if hasattr(self, "cleaned_data") else None
        if upload is None or self.checked_upload is None:
            return None
        asset = Asset.create_image(self.user, self.checked_upload, upload.name)
        self.cleaned_data["first_frame_asset"] = asset
        return asset

    def chosen_first_frame(self) -> Asset | None:
        return self.cleaned_data.get("first_frame_asset")

    def clip_fields(self) -> dict:
        data = self.cleaned_data
        return {
            "prompt": data["prompt"],
            "aspect_ratio": data.get("aspect_ratio") or "",
            "duration": data.get("duration"),
            "resolution": data.get("resolution") or "",
            "first_frame": self.chosen_first_frame(),
            "parent": data.get("parent"),
        }

    # --- Display ------------------------------------------------------------------------

    def cost_text(self) -> str:
        spec = self.spec
        if spec is None:
            return ""
        if spec.is_free:
            return "Free: the offline simulator renders on this computer."
        duration = self.current_duration()
        cost = spec.estimate_cost(duration)
        if cost is None:
            return "The provider does not publish a price for this model."
        per_second = f"{spec.cost_per_second.normalize():f}"
        return f"Estimated cost: {cost.normalize():f} {spec.cost_unit} ({duration} s × {per_second} {spec.cost_unit}/s)"

    def current_duration(self) -> int | None:
        if "duration" not in self.fields:
            return None
        raw = self.data.get("duration") if self.is_bound else self.initial.get("duration")
        try:
            value = int(raw)
        except (TypeError, ValueError):
            value = None
        return value if value in self.spec.durations else self.spec.durations[0]

    def first_frame_preview(self) -> Asset | None:
        """The held first-frame image to show, for a bound or an initial form."""
        if "first_frame_asset" not in self.fields:
            return None
        raw = self.data.get("first_frame_asset") if self.is_bound else self.initial.get("first_frame_asset")
        try:
            pk = int(raw)
        except (TypeError, ValueError):
            return None
        return Asset.objects.filter(pk=pk, owner=self.user).first()

    def parent_clip(self) -> Clip | None:
        raw = self.data.get("parent") if self.is_bound else self.initial.get("parent")
        try:
            pk = int(raw)
        except (TypeError, ValueError):
            return None
        return Clip.objects.filter(pk=pk, owner=self.user).first()


def options_initial(spec: ModelSpec, values) -> dict:
    """Initial values for a form re-rendered for another model: the prompt and whatever
    else the new model also allows survive; the rest falls back to the model's defaults."""
    initial = {"model": spec.ref, "prompt": values.get("prompt", "")}
    if values.get("aspect_ratio") in spec.aspect_ratios:
        initial["aspect_ratio"] = values["aspect_ratio"]
    try:
        duration = int(values.get("duration", ""))
    except ValueError:
        duration = None
    if duration in spec.durations:
        initial["duration"] = duration
    if values.get("resolution") in spec.resolutions:
        initial["resolution"] = values["resolution"]
    for name in ("first_frame_asset", "parent"):
        if values.get(name):
            initial[name] = values[name]
    return initial


class FirstAccountForm(UserCreationForm):
    """The very first account of a studio; it becomes the admin."""

    def save(self, commit=True):
        user = super().save(commit=False)
        user.is_staff = True
        user.is_superuser = True
        if commit:
            user.save()
        return user
