"""Brought videos are prepared by the worker (studio.inputs, jobs.prepare_video): an Asset
now says whether it is ready, and keeps a video's length once it is checked."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("studio", "0005_chains"),
    ]

    operations = [
        migrations.AddField(
            model_name="asset",
            name="status",
            field=models.CharField(
                choices=[("preparing", "Preparing"), ("ready", "Ready"), ("failed", "Failed")],
                default="ready",
                max_length=20,
            ),
        ),
        migrations.AddField(
            model_name="asset",
            name="error",
            field=models.TextField(blank=True),
        ),
        migrations.AddField(
            model_name="asset",
            name="duration",
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="asset",
            name="updated_at",
            field=models.DateTimeField(auto_now=True, default=django.utils.timezone.now),
            preserve_default=False,
        ),
    ]
