# Segment codes and tracking, SEG series per segmentation, saved versions, model version of sessions.

import django.db.models.deletion
import webapp.segmentations.models
from django.conf import settings
from django.db import migrations, models
from pydicom.uid import generate_uid


def fresh_uids(apps, schema_editor):
    # AddField gives every existing row the same default: each needs its own UID.
    for model, field in (("Segmentation", "seg_series_instance_uid"), ("Segment", "tracking_uid")):
        rows = apps.get_model("segmentations", model).objects.all()
        for row in rows:
            setattr(row, field, str(generate_uid()))
            row.save(update_fields=[field])


class Migration(migrations.Migration):

    dependencies = [
        ('segmentations', '0001_initial'),
        ('studies', '0001_initial'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='interactivesession',
            name='model_version',
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name='segment',
            name='algorithm',
            field=models.JSONField(blank=True, default=dict, help_text='{type, name, version} or {}'),
        ),
        migrations.AddField(
            model_name='segment',
            name='category',
            field=models.JSONField(default=webapp.segmentations.models._tissue, help_text='Coded category: {value, scheme, meaning}.'),
        ),
        migrations.AddField(
            model_name='segment',
            name='tracking_id',
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name='segment',
            name='tracking_uid',
            field=models.CharField(default=webapp.segmentations.models._new_uid, max_length=64),
        ),
        migrations.AddField(
            model_name='segment',
            name='type',
            field=models.JSONField(default=webapp.segmentations.models._tissue, help_text='Coded property type: {value, scheme, meaning}.'),
        ),
        migrations.AddField(
            model_name='segmentation',
            name='seg_series_instance_uid',
            field=models.CharField(default=webapp.segmentations.models._new_uid, max_length=64),
        ),
        migrations.RunPython(fresh_uids, migrations.RunPython.noop),
        migrations.AlterField(
            model_name='segmentation',
            name='seg_series_instance_uid',
            field=models.CharField(default=webapp.segmentations.models._new_uid, max_length=64, unique=True),
        ),
        migrations.CreateModel(
            name='SegmentationVersion',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('number', models.PositiveIntegerField(help_text='1, 2, … in the order of saving.')),
                ('created', models.DateTimeField(auto_now_add=True)),
                ('description', models.CharField(blank=True, max_length=256)),
                ('segments', models.JSONField(default=list)),
                ('layer_count', models.PositiveSmallIntegerField(default=1)),
                ('changed_voxels', models.JSONField(default=dict, help_text='Voxels that differ from the parent version, per segment number.')),
                ('created_by', models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL, to=settings.AUTH_USER_MODEL)),
                ('instance', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='segmentation_versions', to='studies.instance')),
                ('parent', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='segmentations.segmentationversion')),
                ('restored_from', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='segmentations.segmentationversion')),
                ('segmentation', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='versions', to='segmentations.segmentation')),
            ],
            options={
                'ordering': ['segmentation', 'number'],
                'constraints': [models.UniqueConstraint(fields=('segmentation', 'number'), name='unique_version_number')],
            },
        ),
    ]
