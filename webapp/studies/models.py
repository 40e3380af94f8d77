"""The study database: an index of stored DICOM instances, with the attributes QIDO-RS matches on.

The files themselves are kept byte for byte in the default storage; ``Instance.metadata`` holds the DICOM JSON
of each instance without bulk data, so metadata and QIDO responses never reopen the files.
"""

from django.db import models


class Patient(models.Model):
    # PatientID is not unique across issuers in the real world, but it is what PACS match on; an empty ID is
    # one "unknown patient" bucket, as in most archives.
    patient_id = models.CharField(max_length=64, unique=True, blank=True)
    patient_name = models.CharField(max_length=324, blank=True, db_index=True)
    birth_date = models.DateField(null=True, blank=True)
    sex = models.CharField(max_length=16, blank=True)

    def __str__(self) -> str:
        return f"{self.patient_name or '(no name)'} [{self.patient_id}]"


class Study(models.Model):
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="studies")
    study_instance_uid = models.CharField(max_length=64, unique=True)
    study_date = models.DateField(null=True, blank=True, db_index=True)
    study_time = models.CharField(max_length=32, blank=True)
    accession_number = models.CharField(max_length=64, blank=True, db_index=True)
    study_id = models.CharField(max_length=64, blank=True)
    study_description = models.CharField(max_length=256, blank=True)
    referring_physician_name = models.CharField(max_length=324, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "studies"

    def __str__(self) -> str:
        return f"{self.study_description or self.study_instance_uid}"


class Series(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="series")
    series_instance_uid = models.CharField(max_length=64, unique=True)
    modality = models.CharField(max_length=16, blank=True, db_index=True)
    series_number = models.IntegerField(null=True, blank=True)
    series_description = models.CharField(max_length=256, blank=True)
    body_part_examined = models.CharField(max_length=64, blank=True)
    frame_of_reference_uid = models.CharField(max_length=64, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "series"

    def __str__(self) -> str:
        return f"{self.modality} {self.series_description or self.series_instance_uid}"


class Instance(models.Model):
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="instances")
    sop_instance_uid = models.CharField(max_length=64, unique=True)
    sop_class_uid = models.CharField(max_length=64)
    instance_number = models.IntegerField(null=True, blank=True)
    transfer_syntax_uid = models.CharField(max_length=64)
    number_of_frames = models.PositiveIntegerField(default=1)
    rows = models.PositiveIntegerField(null=True, blank=True)
    columns = models.PositiveIntegerField(null=True, blank=True)
    # Location in the default storage, size and SHA-256 of the file exactly as received.
    file = models.CharField(max_length=255, unique=True)
    file_size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    # DICOM JSON (PS3.18 F.2) of the data set without pixel data or other bulk data.
    metadata = models.JSONField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["series", "instance_number"])]

    def __str__(self) -> str:
        return self.sop_instance_uid
