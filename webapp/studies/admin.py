from django.contrib import admin

from .models import Instance, Patient, Series, Study


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ("patient_name", "patient_id", "birth_date", "sex")
    search_fields = ("patient_name", "patient_id")


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = ("study_instance_uid", "patient", "study_date", "accession_number", "study_description")
    search_fields = ("study_instance_uid", "accession_number", "study_description")


@admin.register(Series)
class SeriesAdmin(admin.ModelAdmin):
    list_display = ("series_instance_uid", "modality", "series_number", "series_description")
    search_fields = ("series_instance_uid", "series_description")


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    list_display = (
        "sop_instance_uid",
        "series",
        "instance_number",
        "transfer_syntax_uid",
        "number_of_frames",
    )
    search_fields = ("sop_instance_uid",)
    exclude = ("metadata",)
