"""Chains get a title (a Chain row per root clip, made when the creator names it), and a clip
keeps its frame count, so the sequence player turns the join's frame cuts into exact times."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("studio", "0006_asset_preparing"),
    ]

    operations = [
        migrations.CreateModel(
            name="Chain",
            fields=[
                (
                    "root",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="chain_row",
                        serialize=False,
                        to="studio.clip",
                    ),
                ),
                ("title", models.CharField(max_length=200)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
        ),
        migrations.AddField(
            model_name="clip",
            name="video_frames",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
    ]
