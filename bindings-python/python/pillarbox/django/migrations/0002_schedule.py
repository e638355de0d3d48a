# The schedules page's table-less model (see models.Schedule).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("pillarbox", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="Schedule",
            fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
            ],
            options={
                "verbose_name": "schedule",
                "verbose_name_plural": "schedules",
                "managed": False,
                "default_permissions": ("view", "change"),
            },
        ),
    ]
