"""Joins the two lines of migrations made side by side: the seams and colour work (0010)
and the hardening work (0010-0013). Neither touches the other's fields."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("studio", "0010_handoff_seams_colour"),
        ("studio", "0013_unused_uploads_schedule"),
    ]
    operations = []
