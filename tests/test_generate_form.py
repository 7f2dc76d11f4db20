"""The model spec drives both the choices the form shows and what it accepts."""

import pytest
from django import forms
from django.core.files.uploadedfile import SimpleUploadedFile

from studio.catalogue import find_model
from studio.forms import GenerateForm
from studio.models import Asset, Clip

from .images import png_bytes

pytestmark = pytest.mark.django_db

CINEMA = "simulator:cinema"
MOTION = "simulator:motion"


def data(**overrides):
    base = {
        "model": CINEMA,
        "prompt": "A lighthouse at dusk, waves below",
        "aspect_ratio": "16:9",
        "duration": "4",
    }
    base.update(overrides)
    return base


def choices(form, name):
    return [value for value, _ in form.fields[name].choices]


def test_each_simulator_model_offers_exactly_its_own_ratios_and_durations(user):
    cinema = GenerateForm(user=user, initial={"model": CINEMA})
    assert choices(cinema, "aspect_ratio") == ["16:9", "9:16"]
    assert choices(cinema, "duration") == [4, 6, 8]
    motion = GenerateForm(user=user, initial={"model": MOTION})
    assert choices(motion, "aspect_ratio") == ["16:9", "9:16", "1:1", "3:4", "4:3"]
    assert choices(motion, "duration") == [5, 8, 10]


def test_rendered_options_follow_the_chosen_model(signed_in):
    response = signed_in.get("/generate/options/", {"model": MOTION, "prompt": "kept"})
    html = response.content.decode()
    assert 'value="4:3"' in html and 'value="10"' in html
    assert 'value="6"' not in html
    response = signed_in.get("/generate/options/", {"model": CINEMA})
    html = response.content.decode()
    assert 'value="4:3"' not in html and 'value="6"' in html


def test_changing_model_keeps_compatible_values_and_resets_the_rest(signed_in):
    html = signed_in.get(
        "/generate/options/", {"model": MOTION, "aspect_ratio": "9:16", "duration": "4"}
    ).content.decode()
    assert 'value="9:16" selected' in html  # 9:16 exists on both models
    assert '<option value="5" selected>' in html  # 4 s does not: back to the model's first


def test_valid_post_passes(user):
    form = GenerateForm(data(), user=user)
    assert form.is_valid(), form.errors


@pytest.mark.parametrize(
    "field,value", [("aspect_ratio", "1:1"), ("aspect_ratio", "21:9"), ("duration", "5"), ("duration", "abc")]
)
def test_forged_ratio_or_duration_is_rejected_beside_its_field(user, field, value):
    form = GenerateForm(data(**{field: value}), user=user)
    assert not form.is_valid()
    assert field in form.errors
    assert len(form.errors) == 1


def test_ratio_valid_for_another_model_is_still_rejected(user):
    # 4:3 is a Motion ratio: sent with the Cinema model it must not pass.
    form = GenerateForm(data(model=CINEMA, aspect_ratio="4:3"), user=user)
    assert not form.is_valid()
    assert "cannot make that aspect ratio" in form.errors["aspect_ratio"][0]


def test_unknown_model_is_rejected(user):
    form = GenerateForm(data(model="simulator:nope"), user=user)
    assert not form.is_valid()
    assert "model" in form.errors


@pytest.mark.parametrize(
    "prompt,ok",
    [
        ("", False),
        ("abcd", False),
        ("    abcd   ", False),
        ("abcde", True),
        ("x" * 5000, True),
        ("x" * 5001, False),
    ],
)
def test_prompt_length_bounds(user, prompt, ok):
    form = GenerateForm(data(prompt=prompt), user=user)
    assert form.is_valid() is ok
    if not ok:
        assert "prompt" in form.errors


def test_too_long_prompt_message_says_the_limit_and_the_length(user):
    form = GenerateForm(data(prompt="y" * 5200), user=user)
    form.is_valid()
    assert form.errors["prompt"] == ["Keep the prompt to 5,000 characters or fewer (it has 5,200)."]


def test_cost_estimate_says_the_simulator_is_free(user):
    form = GenerateForm(user=user, initial={"model": CINEMA})
    assert form.cost_text().startswith("Free")


def test_cost_estimate_multiplies_seconds_by_rate(user):
    from decimal import Decimal

    from studio.providers.base import ModelSpec

    spec = ModelSpec(
        provider="x",
        key="y",
        label="Paid",
        aspect_ratios=("16:9",),
        durations=(4, 8),
        cost_per_second=Decimal("1.6"),
        cost_unit="credits",
    )
    form = GenerateForm(user=user, spec=spec, initial={"duration": 8})
    assert form.cost_text() == "Estimated cost: 12.8 credits (8 s × 1.6 credits/s)"


def test_a_post_creates_a_queued_clip_and_shows_its_card(
    signed_in, enqueued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_in.post("/generate/", data(), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    clip = Clip.objects.get()
    assert clip.status == Clip.Status.QUEUED
    assert (clip.aspect_ratio, clip.duration, clip.model_key) == ("16:9", 4, "cinema")
    html = response.content.decode()
    assert f'id="clip-{clip.pk}"' in html and "Queued" in html
    assert enqueued == [("studio.jobs.submit_clip", (clip.pk,))]


def test_invalid_post_shows_errors_and_creates_nothing(signed_in, enqueued):
    response = signed_in.post("/generate/", data(prompt="hey", duration="7"), HTTP_HX_REQUEST="true")
    assert response.status_code == 422
    html = response.content.decode()
    assert "Write at least 5 characters" in html
    assert "cannot make that duration" in html
    assert not Clip.objects.exists() and enqueued == []


def test_uploaded_first_frame_is_kept_when_the_prompt_is_rejected(signed_in, user):
    upload = SimpleUploadedFile("start.png", png_bytes(), content_type="image/png")
    response = signed_in.post(
        "/generate/", data(prompt="no", first_frame_upload=upload), HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 422
    asset = Asset.objects.get(owner=user)
    assert f'name="first_frame_asset" value="{asset.pk}"' in response.content.decode()
    # Sending the form again with a good prompt uses the kept image.
    response = signed_in.post("/generate/", data(first_frame_asset=asset.pk), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert Clip.objects.get().first_frame == asset


def test_a_file_that_is_not_an_image_is_refused_beside_the_field(signed_in):
    upload = SimpleUploadedFile("evil.png", b"<svg onload=alert(1)></svg>", content_type="image/png")
    response = signed_in.post("/generate/", data(first_frame_upload=upload), HTTP_HX_REQUEST="true")
    assert response.status_code == 422
    assert "not a complete JPEG, PNG or WebP image" in response.content.decode()
    assert not Clip.objects.exists()


def test_someone_elses_image_or_clip_cannot_be_used(signed_in, other_user):
    from django.core.files.base import ContentFile

    theirs = Asset(owner=other_user)
    theirs.file.save("x.png", ContentFile(png_bytes()), save=True)
    form_data = data(first_frame_asset=theirs.pk)
    response = signed_in.post("/generate/", form_data, HTTP_HX_REQUEST="true")
    assert response.status_code == 422
    their_clip = Clip.objects.create(
        owner=other_user,
        provider="simulator",
        model_key="cinema",
        model_label="x",
        prompt="theirs",
        status=Clip.Status.READY,
    )
    response = signed_in.post("/generate/", data(parent=their_clip.pk), HTTP_HX_REQUEST="true")
    assert response.status_code == 422
    assert Clip.objects.filter(owner__username="ana").count() == 0


def test_spec_lookup_by_ref():
    assert find_model(CINEMA).durations == (4, 6, 8)
    assert find_model("nope:nothing") is None


@pytest.mark.parametrize("value", ["9" * 19, "9" * 5000, "١٢", "²", "-4", "0"])
def test_an_id_no_row_can_have_is_refused_beside_its_field_never_a_server_error(signed_in, value):
    from studio.forms import IdListField

    with pytest.raises(forms.ValidationError):
        IdListField().clean([value])
    for field in ("parent", "first_frame_asset", "last_frame_asset"):
        response = signed_in.post("/generate/", data(**{field: value}), HTTP_HX_REQUEST="true")
        assert response.status_code in (200, 422), field
    response = signed_in.post("/generate/", data(extend_video=f"asset:{value}"), HTTP_HX_REQUEST="true")
    assert response.status_code in (200, 422)
