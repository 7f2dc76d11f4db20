"""A creator always knows what is happening (issue 14): provider keys pasted on the
Providers page (encrypted, studio.keys), a clip can be cancelled, and the time estimate of
a generating card reads the last finished clips of its model through an index."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('studio', '0007_chain_titles'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='ProviderKey',
            fields=[
                ('provider', models.CharField(max_length=40, primary_key=True, serialize=False)),
                ('encrypted', models.TextField()),
                ('updated_at', models.DateTimeField(auto_now=True)),
            ],
        ),
        migrations.AlterField(
            model_name='clip',
            name='status',
            field=models.CharField(choices=[('queued', 'Queued'), ('submitting', 'Queued'), ('running', 'Generating'), ('finishing', 'Generating'), ('ready', 'Ready'), ('failed', 'Failed'), ('cancelled', 'Cancelled')], db_index=True, default='queued', max_length=20),
        ),
        migrations.AddIndex(
            model_name='clip',
            index=models.Index(condition=models.Q(('status', 'ready')), fields=['provider', 'model_key', '-finished_at'], name='clip_ready_by_model'),
        ),
        migrations.AddField(
            model_name='providerkey',
            name='updated_by',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
    ]
