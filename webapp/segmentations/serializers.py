from typing import Any

from rest_framework import serializers

from .models import Segment, Segmentation, SegmentationVersion


class CodeSerializer(serializers.Serializer):
    value = serializers.CharField(max_length=64, help_text="Code value, e.g. 10200004")
    scheme = serializers.CharField(max_length=16, help_text="Coding scheme designator, e.g. SCT")
    meaning = serializers.CharField(max_length=64, help_text="Code meaning, e.g. Liver")


class SegmentSerializer(serializers.ModelSerializer):
    color = serializers.RegexField(r"^#[0-9a-fA-F]{6}$", required=False, help_text="#rrggbb")
    category = CodeSerializer(required=False)
    type = CodeSerializer(required=False)

    class Meta:
        model = Segment
        fields = ["number", "label", "color", "category", "type", "tracking_id", "tracking_uid", "algorithm"]
        # Numbers are given in order (1, 2, 3, …), as DICOM SEG requires.
        read_only_fields = ["number", "tracking_uid", "algorithm"]


class VersionSerializer(serializers.ModelSerializer):
    parent = serializers.IntegerField(source="parent.number", allow_null=True, default=None)
    restored_from = serializers.IntegerField(source="restored_from.number", allow_null=True, default=None)
    created_by = serializers.SerializerMethodField()
    sop_instance_uid = serializers.CharField(source="instance.sop_instance_uid")
    seg_series_instance_uid = serializers.CharField(source="instance.series.series_instance_uid")

    class Meta:
        model = SegmentationVersion
        fields = [
            "number",
            "parent",
            "restored_from",
            "created",
            "created_by",
            "description",
            "segments",
            "layer_count",
            "changed_voxels",
            "sop_instance_uid",
            "seg_series_instance_uid",
        ]
        read_only_fields = fields

    def get_created_by(self, version: SegmentationVersion) -> dict[str, Any] | None:
        user = version.created_by
        if user is None:
            return None
        return {"username": user.get_username(), "full_name": user.get_full_name()}


class SegmentationSerializer(serializers.ModelSerializer):
    series_instance_uid = serializers.CharField(source="series.series_instance_uid", read_only=True)
    segments = SegmentSerializer(many=True, read_only=True)
    latest_version = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by.username", read_only=True, default=None)

    class Meta:
        model = Segmentation
        fields = [
            "id",
            "series_instance_uid",
            "label",
            "description",
            "created",
            "created_by",
            "seg_series_instance_uid",
            "segments",
            "latest_version",
        ]
        read_only_fields = ["id", "created", "seg_series_instance_uid"]

    def get_latest_version(self, segmentation: Segmentation) -> int | None:
        numbers = [version.number for version in segmentation.versions.all()]  # prefetched
        return max(numbers) if numbers else None


class SegmentationCreateSerializer(serializers.Serializer):
    label = serializers.CharField(max_length=64, required=False)
    description = serializers.CharField(max_length=256, required=False, allow_blank=True, default="")
    segments = SegmentSerializer(many=True, required=False)
    seg_instance = serializers.CharField(
        max_length=64,
        required=False,
        help_text="SOP Instance UID of a SEG in the study database that refers to this series: the new "
        "segmentation starts from it (its version 1), with its segments.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "seg_instance" in attrs and ("segments" in attrs or "label" in attrs):
            raise serializers.ValidationError("give either seg_instance, or label and segments")
        if "seg_instance" not in attrs and "label" not in attrs:
            raise serializers.ValidationError({"label": "a label is required"})
        return attrs


class VersionCreateSerializer(serializers.Serializer):
    labelmap = serializers.FileField(
        help_text="NumPy .npy (optionally gzip-compressed), uint8 or uint16, [k, j, i] or [layer, k, j, i] "
        "on the series' voxel grid; values are segment numbers, 0 is background."
    )
    description = serializers.CharField(max_length=256, required=False, allow_blank=True, default="")
    parent = serializers.IntegerField(
        required=False,
        min_value=0,
        help_text="The version the labelmap was edited from (0: none); refused with 409 if another version "
        "was saved meanwhile.",
    )


class SegInstanceSerializer(serializers.Serializer):
    sop_instance_uid = serializers.CharField()
    series_instance_uid = serializers.CharField()
    content_label = serializers.CharField()
    content_description = serializers.CharField()
    segment_count = serializers.IntegerField()
    segmentation = serializers.IntegerField(
        allow_null=True, help_text="The segmentation whose version it is, if any."
    )
