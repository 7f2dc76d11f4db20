"""A brought video's first frame, kept as a JPEG by the worker that checks the video, so the
held-file card's preview is a stored file and no web request decodes video. A video held
before this has none: its card shows the name and size without a picture."""

import studio.models
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('studio', '0014_merge_seams_and_hardening'),
    ]

    operations = [
        migrations.AddField(
            model_name='asset',
            name='poster',
            field=models.FileField(blank=True, max_length=300, upload_to=studio.models.asset_upload_to),
        ),
    ]
