"""The hourly removal of uploads no clip has used for a day (jobs.remove_unused_uploads). In
the database, like the poll sweep's, so every worker shares one schedule; update_or_create
keeps it single when migrations run again."""

from django.db import migrations

NAME = "Remove unused uploads"


def create_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.update_or_create(
        name=NAME,
        defaults={"func": "studio.jobs.remove_unused_uploads", "schedule_type": "H", "repeats": -1},
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("studio", "0012_stored_bytes_and_stale_exports"),
        ("django_q", "0018_task_success_index"),
    ]
    operations = [migrations.RunPython(create_schedule, remove_schedule)]
