from rest_framework import serializers

from .importing import STATUSES
from .models import Study


class StudySerializer(serializers.ModelSerializer):
    """One row of the study list; the annotations come from :func:`webapp.studies.api.study_queryset`."""

    patient_name = serializers.CharField(source="patient.patient_name")
    patient_id = serializers.CharField(source="patient.patient_id")
    patient_birth_date = serializers.DateField(source="patient.birth_date")
    patient_sex = serializers.CharField(source="patient.sex")
    modalities = serializers.SerializerMethodField()
    series_count = serializers.IntegerField()
    instance_count = serializers.IntegerField()

    class Meta:
        model = Study
        fields = [
            "id",
            "study_instance_uid",
            "patient_name",
            "patient_id",
            "patient_birth_date",
            "patient_sex",
            "study_date",
            "study_time",
            "study_description",
            "accession_number",
            "modalities",
            "series_count",
            "instance_count",
            "created",
        ]
        read_only_fields = fields

    def get_modalities(self, study: Study) -> list[str]:
        # The series were prefetched: no query per row.
        return sorted({series.modality for series in study.series.all() if series.modality})


class ImportOutcomeSerializer(serializers.Serializer):
    source = serializers.CharField(help_text="File name, relative path, or archive:entry.")
    status = serializers.ChoiceField(choices=STATUSES)
    reason = serializers.CharField(help_text="Why the file was rejected; empty otherwise.")
    sop_instance_uid = serializers.CharField()
    sop_class_uid = serializers.CharField()
    study_instance_uid = serializers.CharField()
    series_instance_uid = serializers.CharField()


class ImportCountsSerializer(serializers.Serializer):
    stored = serializers.IntegerField()
    already_present = serializers.IntegerField()
    rejected = serializers.IntegerField()


class ImportResultSerializer(serializers.Serializer):
    outcomes = ImportOutcomeSerializer(many=True)
    counts = ImportCountsSerializer()


class ImportRequestSerializer(serializers.Serializer):
    files = serializers.ListField(
        child=serializers.FileField(),
        help_text="DICOM files, zip archives (expanded one level) or gzip files; at most "
        "DATA_UPLOAD_MAX_NUMBER_FILES per request.",
    )
    paths = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="Relative path of each file, in the same order (a folder upload); shown in the outcomes.",
    )
