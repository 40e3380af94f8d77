from django.apps import AppConfig


class SegmentationsConfig(AppConfig):
    name = "webapp.segmentations"
    label = "segmentations"
    verbose_name = "Segmentations"
