# Written by makemigrations (Django 6.1.3); it also loads on Django 5.2.

from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
    ]

    operations = [
        migrations.CreateModel(
            name='Queue',
            fields=[
                ('id', models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
            ],
            options={
                'verbose_name': 'queue and dead letters',
                'verbose_name_plural': 'queues and dead letters',
                'managed': False,
                'default_permissions': ('view', 'change', 'delete'),
            },
        ),
        migrations.CreateModel(
            name='TaskRecord',
            fields=[
                ('id', models.CharField(max_length=64, primary_key=True, serialize=False)),
                ('task_path', models.CharField(max_length=255)),
                ('backend', models.CharField(max_length=100)),
                ('queue_name', models.CharField(max_length=100)),
                ('priority', models.IntegerField(default=0)),
                ('run_after', models.DateTimeField(blank=True, null=True)),
                ('status', models.CharField(choices=[('READY', 'Ready'), ('RUNNING', 'Running'), ('FAILED', 'Failed'), ('SUCCESSFUL', 'Successful')], db_index=True, default='READY', max_length=16)),
                ('args', models.JSONField(default=list)),
                ('kwargs', models.JSONField(default=dict)),
                ('enqueued_at', models.DateTimeField(blank=True, null=True)),
                ('started_at', models.DateTimeField(blank=True, null=True)),
                ('finished_at', models.DateTimeField(blank=True, db_index=True, null=True)),
                ('last_attempted_at', models.DateTimeField(blank=True, null=True)),
                ('return_value', models.JSONField(blank=True, null=True)),
                ('errors', models.JSONField(default=list)),
                ('worker_ids', models.JSONField(default=list)),
            ],
            options={
                'verbose_name': 'task result',
                'ordering': ['-enqueued_at'],
            },
        ),
    ]
