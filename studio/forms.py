"""The generate form, built from one ModelSpec: the spec decides which fields and choices
exist, and the same spec validates the POST, so a hand-made request cannot pass a
combination the model cannot make.

The form only validates. Files a creator brings reach it as the ids of Assets that
studio.inputs made first (dropped, chosen, linked, or posted without JavaScript)."""

from __future__ import annotations

import math

from django import forms
from django.conf import settings
from django.contrib.auth.forms import UserCreationForm
from django.http import QueryDict
from django.urls import reverse

from . import catalogue, keys
from .models import Asset, Chain, Clip, quota_problem
from .providers import ModelSpec, get_provider

PROMPT_MIN = 5
PROMPT_MAX = 5000

# How a clip starts. A provider takes at most one of the three inputs (some answer 400
# to two), so the form asks for one way, shows only its inputs and checks the rest is empty.
TEXT, FIRST_FRAME, REFERENCES, EXTEND = "text", "first_frame", "reference_images", "extend_video"
START_MODES = [
    (TEXT, "Text only"),
    (FIRST_FRAME, "First frame"),
    (REFERENCES, "Reference images"),
    (EXTEND, "Extend a video"),
]
MODE_INPUT = {FIRST_FRAME: "a first frame", REFERENCES: "reference images", EXTEND: "a video to extend"}
# How many of a creator's clips and uploaded videos the "Video to extend" list offers.
EXTEND_CHOICES = 50


def start_modes(spec: ModelSpec) -> list[tuple[str, str]]:
    """The ways to start a clip that this model supports, in display order."""
    supported = {
        TEXT: True,
        FIRST_FRAME: spec.first_frame or spec.last_frame,
        REFERENCES: spec.max_reference_images > 0,
        EXTEND: spec.extend_video,
    }
    labels = dict(START_MODES)
    if spec.last_frame:
        # The same way to start, with the frame the clip should end on as well.
        labels[FIRST_FRAME] = "First and last frame" if spec.first_frame else "Last frame"
    return [(value, labels[value]) for value, _ in START_MODES if supported[value]]


def _values(source, name) -> list:
    """All values of `name` in a QueryDict, a MultiValueDict of files, or a plain dict."""
    if source is None:
        return []
    if hasattr(source, "getlist"):
        return [v for v in source.getlist(name) if v not in ("", None)]
    value = source.get(name)
    if isinstance(value, (list, tuple)):
        return [v for v in value if v not in ("", None)]
    return [] if value in ("", None) else [value]


class IdListField(forms.Field):
    """Primary keys sent as repeated hidden inputs (one per held image)."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value):
        if not value:
            return []
        if not isinstance(value, (list, tuple)):
            value = [value]
        pks = [as_pk(v) for v in value if str(v).strip()]
        if None in pks:  # not an id any row can have
            raise forms.ValidationError("Choose the images again.")
        return pks


# Where a provider's objection to a request field (a Submission name) is shown on the form.
FORM_FIELD_OF = {
    "first_frame": "first_frame_asset",
    "last_frame": "last_frame_asset",
    "reference_images": "reference_assets",
}


def form_field_of(name: str) -> str:
    return FORM_FIELD_OF.get(name, name)


def duration_label(seconds: int) -> str:
    return f"{seconds} seconds"


class GenerateForm(forms.Form):
    model = forms.ChoiceField(
        label="Model", error_messages={"invalid_choice": "Choose one of the models in the list."}
    )
    prompt = forms.CharField(
        label="Prompt",
        widget=forms.Textarea(
            attrs={
                "rows": 4,
                "placeholder": "Describe the shot: who, where, what moves, the light, the camera.",
            }
        ),
        error_messages={"required": "Write a prompt: describe the shot you want."},
        help_text=f"{PROMPT_MIN} to {PROMPT_MAX:,} characters.",
    )
    aspect_ratio = forms.ChoiceField(label="Aspect ratio")
    duration = forms.TypedChoiceField(label="Duration", coerce=int)
    resolution = forms.ChoiceField(label="Resolution")
    generate_audio = forms.BooleanField(label="Generate audio", required=False)
    seed = forms.IntegerField(
        label="Seed",
        required=False,
        min_value=0,
        max_value=2**32 - 1,
        help_text="The same seed and settings give a similar result.",
    )
    start_mode = forms.ChoiceField(label="How the clip starts", required=False)
    # The picture the clip starts from: an image the studio holds (brought by the creator,
    # or the last frame of the clip being continued).
    first_frame_asset = forms.IntegerField(
        label="First frame",
        required=False,
        min_value=1,
        max_value=2**63 - 1,
        widget=forms.HiddenInput,
        help_text="A JPEG, PNG or WebP picture the clip starts from.",
    )
    # The picture the clip should end on, for models that take one (optional).
    last_frame_asset = forms.IntegerField(
        label="Last frame",
        required=False,
        min_value=1,
        max_value=2**63 - 1,
        widget=forms.HiddenInput,
        help_text="Optional: a JPEG, PNG or WebP picture the clip ends on.",
    )
    reference_assets = IdListField(
        label="Reference images",
        required=False,
        help_text="1 to 3 JPEG, PNG or WebP pictures of the people, objects or style to keep.",
    )
    # "clip:<pk>" (one of the creator's ready clips) or "asset:<pk>" (a brought video). A
    # select of the creator's clips and videos, but checked by clean_extend_video: a video
    # brought a moment ago, still being prepared, deserves a better word than "invalid".
    extend_video = forms.CharField(label="Video to extend", required=False, widget=forms.Select)
    parent = forms.IntegerField(required=False, min_value=1, max_value=2**63 - 1, widget=forms.HiddenInput)
    # Continuing a clip: the frame of it the new clip starts from. A frame of the strip (its
    # number), or "any" with the number typed or scrubbed to in `handoff_any`.
    handoff_frame = forms.CharField(label="Hand-off frame", required=False, max_length=20)
    handoff_any = forms.IntegerField(
        label="Frame number",
        required=False,
        min_value=0,
        max_value=2**31,
        error_messages={"invalid": "Enter the number of a frame (0 is the first)."},
    )

    # What changed when the form was redrawn for another model ("Duration 10 s → 8 s, the
    # nearest this model makes"), set by the view that redraws it.
    carry_notes: tuple[str, ...] | list[str] = ()

    def __init__(
        self, *args, user, spec: ModelSpec | None = None, intake_errors: dict | None = None, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.user = user
        # Files the intake refused (studio.inputs), by form field: shown beside the field.
        self.intake_errors = intake_errors or {}
        groups = catalogue.model_groups()
        self.fields["model"].choices = [
            (provider.label, [(m.ref, m.label) for m in specs]) for provider, specs in groups
        ]
        if spec is None:
            ref = self.data.get("model") if self.is_bound else self.initial.get("model")
            offered = [m for _, specs in groups for m in specs]
            spec = next((m for m in offered if m.ref == ref), offered[0] if offered else None)
        self.spec = spec
        # Ways to start this model offers but this install cannot serve, with the reason.
        self.unavailable_modes: dict[str, str] = {}
        self._fit_fields_to(spec)
        self.chosen_mode = TEXT

    def _fit_fields_to(self, spec: ModelSpec | None) -> None:
        """Keep only the fields this model has, with exactly its choices."""
        if spec is None:
            return
        self.initial.setdefault("model", spec.ref)
        if spec.aspect_ratios:
            self.fields["aspect_ratio"].choices = [(r, r) for r in spec.aspect_ratios]
            self._explain_choices("aspect_ratio", "aspect ratio", spec.aspect_ratios)
        else:
            del self.fields["aspect_ratio"]
        if spec.durations:
            self.fields["duration"].choices = [(d, duration_label(d)) for d in spec.durations]
            self._explain_choices("duration", "duration", [duration_label(d) for d in spec.durations])
        else:
            del self.fields["duration"]
        if spec.resolutions:
            self.fields["resolution"].choices = [(r, r) for r in spec.resolutions]
            self._explain_choices("resolution", "resolution", spec.resolutions)
        else:
            del self.fields["resolution"]
        if not spec.generate_audio:
            del self.fields["generate_audio"]
        if not spec.seed:
            del self.fields["seed"]
        if not spec.first_frame:
            del self.fields["first_frame_asset"]
        if not spec.last_frame:
            del self.fields["last_frame_asset"]
        if spec.second_prices:
            # The price depends on these too: the form's one listener redraws the estimate.
            for name in ("resolution", "generate_audio"):
                if name in self.fields:
                    self.fields[name].widget.attrs["data-redraw"] = ""
        modes = start_modes(spec)
        if len(modes) > 1:
            self.fields["start_mode"].choices = modes
            self.fields["start_mode"].error_messages["invalid_choice"] = (
                f"{spec.label} cannot start a clip that way. Choose one of: "
                f"{', '.join(label for _, label in modes)}."
            )
            reason = self._unpublishable_reason()
            if reason:
                self.unavailable_modes = {
                    value: reason for value, _ in modes if value != TEXT and not self._continues_fresh(value)
                }
            if self.unavailable_modes:
                self.fields["start_mode"].help_text = reason
        else:
            del self.fields["start_mode"]
        if spec.max_reference_images:
            self.fields["reference_assets"].help_text = (
                f"1 to {spec.max_reference_images} JPEG, PNG or WebP pictures of the people, "
                "objects or style to keep."
            )
        else:
            del self.fields["reference_assets"]
        if spec.extend_video:
            self.fields["extend_video"].widget.choices = self._extend_choices()
        else:
            del self.fields["extend_video"]

    def _unpublishable_reason(self) -> str:
        """Why this install cannot start this model's clips from a file ("" when it can): the
        provider fetches files by URL and the studio has no public address."""
        if settings.PUBLIC_BASE_URL:
            return ""
        try:
            provider = get_provider(self.spec.provider)
        except LookupError:
            return ""
        if not provider.needs_public_urls:
            return ""
        return (
            f"Starting from a picture or a video is not available here: {provider.label} fetches "
            "those files from the studio's public web address, and this studio does not have one. "
            "Whoever runs the studio can set PUBLIC_BASE_URL to that address (the Providers page "
            "explains); until then, start from text."
        )

    def _continues_fresh(self, mode: str) -> bool:
        """A continued clip whose provider's own copy of the last frame is still fresh needs
        nothing published: its first frame works without a public address."""
        if mode != FIRST_FRAME:
            return False
        source = self.data if self.is_bound else self.initial
        parent_pk, frame_pk = as_pk(source.get("parent")), as_pk(source.get("first_frame_asset"))
        if not parent_pk or not frame_pk:
            return False
        parent = Clip.objects.filter(pk=parent_pk, owner=self.user).first()
        return bool(parent and parent.last_frame_id == frame_pk and parent.fresh_remote_last_frame_url())

    def _extend_choices(self) -> list:
        """The creator's ready clips and uploaded videos, newest first."""
        clips = (
            Clip.objects.visible_to(self.user)
            .filter(status=Clip.Status.READY)
            .exclude(video="")
            .order_by("-pk")[:EXTEND_CHOICES]
        )
        uploads = Asset.objects.filter(
            owner=self.user, kind=Asset.Kind.VIDEO, source=Asset.Source.UPLOAD
        ).order_by("-pk")[:EXTEND_CHOICES]
        choices: list = [("", "Choose one of your clips…")]
        if clips:
            choices.append(
                ("Your clips", [(f"clip:{c.pk}", f"Clip #{c.pk} · {c.prompt[:60]}") for c in clips])
            )
        if uploads:
            choices.append(
                ("Your uploads", [(f"asset:{a.pk}", a.original_name or f"Video #{a.pk}") for a in uploads])
            )
        return choices

    def _explain_choices(self, name: str, what: str, allowed) -> None:
        """Say, beside the field, what this model can do instead of a bare "invalid"."""
        self.fields[name].error_messages["invalid_choice"] = (
            f"{self.spec.label} cannot make that {what}. Choose one of: {', '.join(map(str, allowed))}."
        )

    # --- Field checks -------------------------------------------------------------------

    def clean_model(self):
        if self.spec is None or self.cleaned_data["model"] != self.spec.ref:
            raise forms.ValidationError("Choose one of the models in the list.")
        return self.spec.ref

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

    def clean_last_frame_asset(self):
        pk = self.cleaned_data.get("last_frame_asset")
        if not pk:
            return None
        asset = Asset.objects.filter(pk=pk, owner=self.user, kind=Asset.Kind.IMAGE).first()
        if asset is None:
            raise forms.ValidationError("That last frame is no longer available; choose it again.")
        return asset

    def clean_first_frame_asset(self):
        pk = self.cleaned_data.get("first_frame_asset")
        if not pk:
            return None
        asset = Asset.objects.filter(pk=pk, owner=self.user, kind=Asset.Kind.IMAGE).first()
        if asset is None:
            raise forms.ValidationError("That first frame is no longer available; choose it again.")
        return asset

    def clean_reference_assets(self):
        pks = self.cleaned_data.get("reference_assets") or []
        found = {a.pk: a for a in Asset.objects.filter(pk__in=pks, owner=self.user, kind=Asset.Kind.IMAGE)}
        if len(found) != len(set(pks)):
            raise forms.ValidationError("A reference image is no longer available; choose it again.")
        return [found[pk] for pk in dict.fromkeys(pks)]

    def clean_extend_video(self):
        """ "clip:<pk>" (one of the creator's ready clips) or "asset:<pk>" (a brought video)."""
        value = self.cleaned_data.get("extend_video") or ""
        if not value:
            return None
        kind, _, raw = value.partition(":")
        pk = as_pk(raw)
        if kind == "clip" and pk:
            clip = (
                Clip.objects.visible_to(self.user)
                .filter(pk=pk, status=Clip.Status.READY)
                .exclude(video="")
                .first()
            )
            if clip is not None:
                return clip
        elif kind == "asset" and pk:
            asset = Asset.objects.filter(pk=pk, owner=self.user, kind=Asset.Kind.VIDEO).first()
            if asset is not None and asset.status == Asset.Status.PREPARING:
                raise forms.ValidationError(
                    "The video is still being prepared. Press Generate again once its preview shows."
                )
            if asset is not None and asset.status == Asset.Status.FAILED:
                raise forms.ValidationError(asset.error or "That video could not be used; choose another.")
            if asset is not None:
                return asset
        raise forms.ValidationError("That video is no longer available; choose another.")

    def clean(self):
        cleaned = super().clean()
        full = quota_problem(self.user) if self.user is not None else ""
        if full:
            self.add_error(None, full)
        for field, messages in self.intake_errors.items():
            for message in messages:
                self.add_error(field if field in self.fields else None, message)
        if (
            self.spec is not None
            and "last_frame_asset" not in self.fields
            and _values(self.data, "last_frame_asset")
        ):
            self.add_error(None, f"{self.spec.label} cannot take a last frame.")
        cleaned["handoff_index"] = self._clean_handoff(cleaned)
        if self.spec is None or "start_mode" not in self.fields:
            return cleaned
        given = {
            FIRST_FRAME: bool(
                cleaned.get("handoff_index") is not None
                or cleaned.get("first_frame_asset")
                or cleaned.get("last_frame_asset")
                or self.errors.get("first_frame_asset")
                or self.errors.get("last_frame_asset")
            ),
            REFERENCES: bool(cleaned.get("reference_assets") or self.errors.get("reference_assets")),
            EXTEND: bool(cleaned.get("extend_video") or self.errors.get("extend_video")),
        }
        # An older page (or a script) may send no mode: take it from the single input given.
        mode = cleaned.get("start_mode") or next((m for m, present in given.items() if present), TEXT)
        self.chosen_mode = cleaned["start_mode"] = mode
        label = dict(START_MODES)[mode]
        extra = [MODE_INPUT[m] for m, present in given.items() if present and m != mode]
        if extra:
            # The page never sends these together: a forged or stale request. Say it beside
            # the one field that is always shown.
            self.add_error(
                "start_mode",
                f"A clip starts one way only: “{label}” cannot be sent with "
                f"{' and '.join(extra)}. Remove it or choose another way.",
            )
            return cleaned
        if mode == FIRST_FRAME and not given[FIRST_FRAME]:
            field = "first_frame_asset" if "first_frame_asset" in self.fields else "last_frame_asset"
            what = "first" if field == "first_frame_asset" else "last"
            self.add_error(field, f"Choose a picture for the {what} frame, or choose “Text only”.")
        elif (
            mode == FIRST_FRAME
            and cleaned.get("last_frame_asset")
            and not cleaned.get("first_frame_asset")
            and not self.spec.last_frame_alone
            and "first_frame_asset" in self.fields
        ):
            # Providers document a last frame only together with a first one (a lone one is
            # refused, or ignored, on a paid clip), unless this model is known to take it alone.
            self.add_error(
                "first_frame_asset",
                f"{self.spec.label} takes a last frame only together with a first frame: add the "
                "picture the clip starts from.",
            )
        if mode == REFERENCES and not self.errors.get("reference_assets"):
            count = len(cleaned.get("reference_assets") or [])
            most = self.spec.max_reference_images
            if count == 0:
                self.add_error(
                    "reference_assets", f"Add 1 to {most} reference images, or choose “Text only”."
                )
            elif count > most:
                self.add_error(
                    "reference_assets", f"Use at most {most} reference images ({count} were sent)."
                )
        if mode == EXTEND and not given[EXTEND]:
            self.add_error("extend_video", "Choose one of your clips, or bring a video to extend.")
        if mode != TEXT and not self.errors:
            self._check_publishable(mode, cleaned)
        return cleaned

    def _clean_handoff(self, cleaned) -> int | None:
        """The number of the parent's frame the clip starts from, or None (not continuing
        from a chosen frame). A frame outside the parent is refused beside its field."""
        raw = (cleaned.get("handoff_frame") or "").strip()
        if not raw or "first_frame_asset" not in self.fields:
            return None
        field = "handoff_frame"
        if raw == "any":
            field, index = "handoff_any", cleaned.get("handoff_any")
            if index is None:
                if not self.errors.get("handoff_any"):
                    self.add_error(field, "Enter the number of the frame to continue from (0 is the first).")
                return None
        elif raw.isascii() and raw.isdigit():
            index = int(raw)
        else:
            self.add_error(field, "Choose one of the frames, or enter a frame number.")
            return None
        parent = cleaned.get("parent")
        if parent is None:
            if not self.errors.get("parent"):
                self.add_error(
                    field, "A hand-off frame is a frame of the clip being continued; none was given."
                )
            return None
        problem = parent.handoff_error(index)
        if problem:
            self.add_error(field, problem)
            return None
        return index

    def _check_publishable(self, mode: str, cleaned) -> None:
        """A provider that fetches files by URL needs the studio's public address; say so
        now, before anything is sent, rather than fail the clip later."""
        if settings.PUBLIC_BASE_URL:
            return
        try:
            provider = get_provider(self.spec.provider)
        except LookupError:
            return
        if not provider.needs_public_urls:
            return
        if mode == FIRST_FRAME:
            parent, asset = cleaned.get("parent"), self._first_frame_of(cleaned)
            if (
                parent is not None
                and asset is not None
                and parent.last_frame_id == asset.pk
                and parent.fresh_remote_last_frame_url()
            ):
                return  # the provider's own copy of that last frame is still fresh
        field = {FIRST_FRAME: "first_frame_asset", REFERENCES: "reference_assets", EXTEND: "extend_video"}[
            mode
        ]
        if mode == FIRST_FRAME and cleaned.get("handoff_index") is not None:
            field = "handoff_frame"  # beside the picker, where the frame was chosen
        self.add_error(
            field,
            (
                f"{provider.label} fetches this file from the studio's public web address, and the "
                "studio does not have one yet. Ask whoever runs the studio to set PUBLIC_BASE_URL, "
                "or choose “Text only”."
            ),
        )

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

    def chosen_first_frame(self) -> Asset | None:
        return self._first_frame_of(self.cleaned_data)

    @staticmethod
    def _first_frame_of(cleaned) -> Asset | None:
        """The picture the clip starts from, when it exists already. Continuing from a chosen
        frame: the parent's last-frame image for its last frame as made; any other frame (or
        one of a colour-matched parent) is taken from the video by the worker
        (jobs.attach_handoff_frame), so nothing sent with the form can stand in for it."""
        parent, handoff = cleaned.get("parent"), cleaned.get("handoff_index")
        if parent is None or handoff is None:
            return cleaned.get("first_frame_asset")
        if handoff == parent.last_index and parent.last_frame_id and not parent.plays_matched:
            return parent.last_frame
        return None

    def handoff(self) -> int | None:
        """The parent's frame the clip starts from, as Clip.handoff_frame records it: the
        chosen one, or the last when the parent's last-frame image was sent (older pages)."""
        data = self.cleaned_data
        parent = data.get("parent")
        if self.chosen_mode != FIRST_FRAME or parent is None:
            return None
        if data.get("handoff_index") is not None:
            return data["handoff_index"]
        first = data.get("first_frame_asset")
        if first is not None and first.pk == parent.last_frame_id:
            return parent.last_index
        return None

    def clip_fields(self) -> dict:
        """The new clip's fields for jobs.start_clip; only the inputs of the chosen way to start."""
        data = self.cleaned_data
        mode = self.chosen_mode
        parent = data.get("parent")
        # One of the creator's clips, or a brought video; extending a clip continues it
        # (jobs.start_clip makes it the parent).
        extend = data.get("extend_video") if mode == EXTEND else None
        return {
            "prompt": data["prompt"],
            "aspect_ratio": data.get("aspect_ratio") or "",
            "duration": data.get("duration"),
            "resolution": data.get("resolution") or "",
            "first_frame": self.chosen_first_frame() if mode == FIRST_FRAME else None,
            "end_frame": data.get("last_frame_asset") if mode == FIRST_FRAME else None,
            "generate_audio": data.get("generate_audio") if "generate_audio" in self.fields else None,
            "seed": data.get("seed") if "seed" in self.fields else None,
            "reference_images": list(data.get("reference_assets") or []) if mode == REFERENCES else [],
            "extend_video": extend,
            "parent": parent,
            "handoff_frame": self.handoff(),
        }

    # --- Display ------------------------------------------------------------------------

    def cost_text(self) -> str:
        """The estimate of exactly what Generate would send now: the options as shown (a
        select shows its first choice until another is picked), the way the clip starts and
        the images held. jobs.start_clip prices the saved clip with the same ModelSpec.estimate,
        so the form and the queued card agree."""
        spec = self.spec
        if spec is None:
            return ""
        if spec.is_free:
            return spec.free_note or "Free."
        audio = self.current_value("generate_audio")
        audio = (
            None if "generate_audio" not in self.fields else audio not in (None, "", False, "false", "off")
        )
        mode = self.current_mode()
        frames = len(self.first_frame_held()) + len(self.last_frame_held()) if mode == FIRST_FRAME else 0
        estimate = spec.estimate(
            self.current_duration(),
            self.current_choice("resolution"),
            audio,
            start_mode=mode,
            frames=frames,
            references=len(self.reference_previews()) if mode == REFERENCES else 0,
        )
        if estimate is None:
            return "The price is not known in advance: the real cost is known after the clip is made."
        return f"Estimated cost: {estimate.amount.normalize():f} {spec.cost_unit} ({estimate.breakdown})"

    def current_choice(self, name: str) -> str:
        """A select's value as the page shows it: the one sent or set when it is one of the
        choices, otherwise the first choice (what a browser shows). "" without the field."""
        if name not in self.fields:
            return ""
        choices = [str(value) for value, _ in self.fields[name].choices]
        value = str(self.current_value(name) or "")
        return value if value in choices else (choices[0] if choices else "")

    def current_duration(self) -> int | None:
        if "duration" not in self.fields:
            return None
        raw = self.data.get("duration") if self.is_bound else self.initial.get("duration")
        try:
            value = int(raw)
        except (TypeError, ValueError):
            value = None
        return value if value in self.spec.durations else self.spec.durations[0]

    def current_value(self, name: str):
        """A field's value as shown now (sent or initial), or None when the model has no
        such field."""
        if name not in self.fields:
            return None
        return self.data.get(name) if self.is_bound else self.initial.get(name)

    def current_mode(self) -> str:
        """The way to start shown now: the chosen one when this model has it, otherwise the
        one the held inputs imply (a continued clip starts from a first frame)."""
        if "start_mode" not in self.fields:
            return TEXT
        source = self.data if self.is_bound else self.initial
        raw = source.get("start_mode")
        allowed = [
            value for value, _ in self.fields["start_mode"].choices if value not in self.unavailable_modes
        ]
        if self.is_bound and raw in self.unavailable_modes:
            return raw  # sent all the same (an old page): its input shows the refusal beside it
        if raw in allowed:
            return raw
        # A file refused on the way in (intake_errors) still says which input it was for.
        sent = {name for name in self.intake_errors} | {
            name
            for name in ("first_frame_asset", "last_frame_asset", "reference_assets", "extend_video")
            if _values(source, name)
        }
        implied = [
            (FIRST_FRAME, sent & {"first_frame_asset", "last_frame_asset"}),
            (REFERENCES, "reference_assets" in sent),
            (EXTEND, "extend_video" in sent),
        ]
        return next((mode for mode, present in implied if present and mode in allowed), TEXT)

    def reference_previews(self) -> list[Asset]:
        """The held reference images to show, in the order they were added."""
        if "reference_assets" not in self.fields:
            return []
        source = self.data if self.is_bound else self.initial
        pks = [pk for pk in map(as_pk, _values(source, "reference_assets")) if pk]
        found = {a.pk: a for a in Asset.objects.filter(pk__in=pks, owner=self.user, kind=Asset.Kind.IMAGE)}
        return [found[pk] for pk in dict.fromkeys(pks) if pk in found]

    def first_frame_preview(self) -> Asset | None:
        """The held first-frame image to show, for a bound or an initial form."""
        if "first_frame_asset" not in self.fields:
            return None
        raw = self.data.get("first_frame_asset") if self.is_bound else self.initial.get("first_frame_asset")
        pk = as_pk(raw)
        return Asset.objects.filter(pk=pk, owner=self.user).first() if pk else None

    def first_frame_held(self) -> list[Asset]:
        held = self.first_frame_preview()
        return [held] if held else []

    def first_frame_is_fixed(self) -> bool:
        """A continued clip's first frame is its parent's last frame: not removable here."""
        held = self.first_frame_preview()
        return bool(held and held.source == Asset.Source.LAST_FRAME)

    def last_frame_held(self) -> list[Asset]:
        held = self.last_frame_preview()
        return [held] if held else []

    def shape_hint(self) -> dict | None:
        """When the first frame's shape is not the clip's, say so and offer the model's
        closest aspect ratio (the picture would otherwise be cropped or stretched)."""
        held = self.first_frame_preview()
        if held is None or not held.aspect or "aspect_ratio" not in self.fields:
            return None
        source = self.data if self.is_bound else self.initial
        chosen = source.get("aspect_ratio") or self.spec.aspect_ratios[0]
        if chosen not in self.spec.aspect_ratios:
            chosen = self.spec.aspect_ratios[0]
        closest = min(self.spec.aspect_ratios, key=lambda r: abs(math.log(held.aspect / ratio_value(r))))
        if abs(math.log(held.aspect / ratio_value(chosen))) < 0.03:
            return None
        message = (
            f"The first frame is {held.width} × {held.height}, a different shape from {chosen}: "
            "the picture will be cropped to fit."
        )
        return {"message": message, "closest": closest if closest != chosen else ""}

    def extend_video_held(self) -> list[Asset]:
        """The brought video chosen to extend, for its held card (a video still being
        prepared shows "Preparing…" there)."""
        if "extend_video" not in self.fields:
            return []
        source = self.data if self.is_bound else self.initial
        kind, _, raw = str(source.get("extend_video") or "").partition(":")
        pk = as_pk(raw)
        if kind != "asset" or pk is None:
            return []
        return list(Asset.objects.filter(pk=pk, owner=self.user, kind=Asset.Kind.VIDEO))

    def last_frame_preview(self) -> Asset | None:
        """The held last-frame image to show, for a bound or an initial form."""
        if "last_frame_asset" not in self.fields:
            return None
        raw = self.data.get("last_frame_asset") if self.is_bound else self.initial.get("last_frame_asset")
        pk = as_pk(raw)
        return Asset.objects.filter(pk=pk, owner=self.user).first() if pk else None

    def parent_clip(self) -> Clip | None:
        if not hasattr(self, "_parent_clip"):
            raw = self.data.get("parent") if self.is_bound else self.initial.get("parent")
            pk = as_pk(raw)
            self._parent_clip = Clip.objects.filter(pk=pk, owner=self.user).first() if pk else None
        return self._parent_clip

    def handoff_picker(self) -> HandoffPicker | None:
        """The hand-off frame picker, when the form continues a ready clip from a frame."""
        parent = self.parent_clip()
        if (
            parent is None
            or not parent.is_ready
            or not parent.video_frames
            or "first_frame_asset" not in self.fields
        ):
            return None
        source = self.data if self.is_bound else self.initial
        errors = self.errors if self.is_bound else {}
        return HandoffPicker(
            parent,
            chosen=str(source.get("handoff_frame") or ""),
            any_value=str(source.get("handoff_any") or ""),
            errors=list(errors.get("handoff_frame", [])),
            any_errors=list(errors.get("handoff_any", [])),
        )


class HandoffPicker:
    """What the hand-off picker shows for a parent clip: its strip (the last second, the true
    last frame preselected, the sharpest marked) and the "any frame" scrubber. Shared by the
    generate form and the chain view's next step."""

    def __init__(
        self, parent: Clip, chosen="", any_value="", errors=(), any_errors=(), prefix="", preserve=False
    ):
        self.parent = parent
        # Kept as it is across the chain view's live swaps (hx-preserve).
        self.preserve = preserve
        self.frames = parent.strip_frames
        self.last = parent.last_index
        self.errors, self.any_errors = list(errors), list(any_errors)
        self.prefix = prefix or f"handoff-{parent.pk}"
        numbers = {f.index for f in self.frames}
        self.any_chosen = chosen == "any" or (
            chosen.isdigit() and int(chosen) not in numbers and bool(self.frames)
        )
        if self.any_chosen:
            self.selected = None
            self.any_value = any_value if chosen == "any" else chosen
        else:
            self.selected = int(chosen) if chosen.isdigit() else self.last
            self.any_value = any_value or str(self.last)

    @property
    def fps(self) -> float:
        return self.parent.frames_per_second

    @property
    def preview(self) -> dict:
        """The picture the new clip will start from, shown large: the parent's last-frame
        image for its last frame, else the strip's picture of the chosen frame."""
        index = self.selected if self.selected is not None else self.last
        if index == self.last and self.parent.last_frame_id:
            return {
                "url": reverse("asset_file", args=[self.parent.last_frame_id]),
                "alt": "First frame: last frame of the clip being continued",
            }
        return {
            "url": reverse("clip_strip_frame", args=[self.parent.pk, index]),
            "alt": f"First frame: frame {index} of the clip being continued",
        }


def as_pk(raw) -> int | None:
    """A value sent as an id, when it can be one (ASCII digits, within a database integer).
    `str.isdigit` alone takes "١٢" and "²", and int() refuses numbers past 4,300 digits:
    the length is checked before anything is converted."""
    text = str(raw if raw is not None else "").strip()
    if not (0 < len(text) <= 19 and text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if 0 < value < 2**63 else None


def ratio_value(ratio: str) -> float:
    width, _, height = ratio.partition(":")
    return float(width) / float(height)


def is_ratio(ratio: str) -> bool:
    """Whether `ratio` reads as a shape ("16:9"), so it can be compared."""
    width, _, height = (ratio or "").partition(":")
    return width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0


def resolution_lines(resolution: str) -> int | None:
    """A resolution's height in lines, to compare them: "720p" → 720, "4K" → 2160."""
    text = (resolution or "").strip().lower()
    if text.endswith("p") and text[:-1].isdigit():
        return int(text[:-1])
    return {"1k": 1080, "2k": 1440, "4k": 2160, "8k": 4320}.get(text)


def _nearest(choices, value, distance):
    """The choice nearest to `value` (the first of equals: the model's default wins a tie)."""
    return min(choices, key=lambda choice: distance(choice, value))


def options_initial(spec: ModelSpec, values, changes: list | None = None) -> dict:
    """Initial values for a form re-rendered for another model: the prompt survives, and
    so does every value the new model also allows. Where it does not, the nearest one it
    makes is taken (a duration, a shape, a resolution), and `changes` says so in words."""
    notes = changes if changes is not None else []
    initial = {"model": spec.ref, "prompt": values.get("prompt", "")}
    ratio = values.get("aspect_ratio") or ""
    if ratio in spec.aspect_ratios:
        initial["aspect_ratio"] = ratio
    elif spec.aspect_ratios and is_ratio(ratio):
        near = _nearest(
            spec.aspect_ratios, ratio, lambda r, v: abs(math.log(ratio_value(r) / ratio_value(v)))
        )
        initial["aspect_ratio"] = near
        notes.append(f"Aspect ratio {ratio} → {near}, the closest shape this model makes.")
    try:
        duration = int(values.get("duration", ""))
    except ValueError:
        duration = None
    if duration in spec.durations:
        initial["duration"] = duration
    elif duration and spec.durations:
        near = _nearest(spec.durations, duration, lambda d, v: (abs(d - v), d))
        initial["duration"] = near
        notes.append(f"Duration {duration} s → {near} s, the nearest this model makes.")
    resolution = values.get("resolution") or ""
    if resolution in spec.resolutions:
        initial["resolution"] = resolution
    elif resolution and resolution_lines(resolution) and spec.resolutions:
        known = [r for r in spec.resolutions if resolution_lines(r)]
        if known:
            lines = resolution_lines(resolution)
            near = _nearest(known, lines, lambda r, v: abs(resolution_lines(r) - v))
            initial["resolution"] = near
            notes.append(f"Resolution {resolution} → {near}, the nearest this model makes.")
    if not spec.generate_audio and values.get("generate_audio") not in (None, "", "false", "off"):
        notes.append("This model makes no sound, so there is no audio.")
    for name in ("first_frame_asset", "parent", "extend_video", "handoff_frame", "handoff_any"):
        if values.get(name):
            initial[name] = values[name]
    if values.get("last_frame_asset") and spec.last_frame:
        initial["last_frame_asset"] = values["last_frame_asset"]
    if spec.generate_audio and values.get("generate_audio") not in (None, "", "false", "off"):
        initial["generate_audio"] = True
    if spec.seed and values.get("seed"):
        initial["seed"] = values["seed"]
    modes = dict(start_modes(spec))
    mode = values.get("start_mode") or ""
    if mode in modes:
        initial["start_mode"] = mode
    elif mode and mode != TEXT:
        notes.append(
            f"This model cannot start from {MODE_INPUT.get(mode, 'that input')}, so the clip starts from text."
        )
    references = _values(values, "reference_assets")
    if references and spec.max_reference_images:
        initial["reference_assets"] = references
    return initial


def data_from_clip(clip: Clip) -> QueryDict:
    """A clip's settings as form data, to bind the form for "try again"."""
    data = QueryDict(mutable=True)
    data["model"] = clip.model_ref
    data["prompt"] = clip.prompt
    for name in ("aspect_ratio", "resolution"):
        if getattr(clip, name):
            data[name] = getattr(clip, name)
    if clip.duration:
        data["duration"] = str(clip.duration)
    data["start_mode"] = clip.start_mode
    if clip.first_frame_id:
        data["first_frame_asset"] = str(clip.first_frame_id)
    if clip.end_frame_id:
        data["last_frame_asset"] = str(clip.end_frame_id)
    if clip.generate_audio:
        data["generate_audio"] = "on"
    if clip.seed is not None:
        data["seed"] = str(clip.seed)
    data.setlist("reference_assets", [str(a.pk) for a in clip.reference_images.order_by("pk")])
    video = clip.extend_video
    if video is not None:
        if video.source == Asset.Source.CLIP_VIDEO:
            source = Clip.objects.filter(owner=clip.owner, video=video.file.name).first()
            data["extend_video"] = f"clip:{source.pk}" if source else ""
        else:
            data["extend_video"] = f"asset:{video.pk}"
    if clip.parent_id and clip.parent_id != _extended_clip_pk(data):
        data["parent"] = str(clip.parent_id)
        if clip.handoff_frame is not None:
            data["handoff_frame"] = str(clip.handoff_frame)
    return data


def _extended_clip_pk(data) -> int | None:
    kind, _, raw = (data.get("extend_video") or "").partition(":")
    return as_pk(raw) if kind == "clip" else None


def initial_from_clip(clip: Clip) -> dict:
    """A clip's settings as initial values ("Remix"): the form opens filled, unchecked."""
    data = data_from_clip(clip)
    return {name: (data.getlist(name) if name == "reference_assets" else data.get(name)) for name in data}


class FirstAccountForm(UserCreationForm):
    """The very first account of a studio; it becomes the admin."""

    def admin_user(self):
        """The account as the studio's admin, not yet saved: FirstRun.admit saves it, unless
        another first account was made meanwhile."""
        user = self.save(commit=False)
        user.is_staff = True
        user.is_superuser = True
        return user


class ChainTitleForm(forms.Form):
    """A chain's title, edited in place in the chain view."""

    title = forms.CharField(
        label="Title",
        max_length=Chain.TITLE_MAX,
        error_messages={
            "required": "Give the chain a title (it names the downloaded film).",
            "max_length": "Keep the title to %(limit_value)d characters or fewer (this one has %(show_value)d).",
        },
    )


class ProviderKeyForm(forms.Form):
    """The key an admin pastes for a provider. It only validates (studio.keys.clean trims
    spaces and quotes); testing and saving are the view's."""

    key = forms.CharField(
        label="API key",
        strip=False,
        error_messages={"required": "Paste the key: this field is empty."},
        widget=forms.PasswordInput(
            render_value=False,
            attrs={"autocomplete": "off", "spellcheck": "false", "autocapitalize": "off"},
        ),
    )

    def __init__(self, *args, setting: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.setting = setting
        # The feedback area (errors, the test's answer) is always on the page, so the field
        # can point at it whatever comes back.
        self.fields["key"].widget.attrs["aria-describedby"] = (
            f"{self['key'].auto_id}_helptext {self['key'].auto_id}_feedback"
        )

    @classmethod
    def for_provider(cls, provider, data=None) -> ProviderKeyForm:
        return cls(data, setting=provider.key_setting, auto_id=f"id_{provider.name}_%s")

    def clean_key(self):
        try:
            return keys.clean(self.cleaned_data["key"], self.setting)
        except keys.KeyRefused as refused:
            raise forms.ValidationError(str(refused))
