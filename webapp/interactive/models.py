"""Inference workers as the routing sees them: each live worker refreshes its row with a heartbeat."""

from django.db import models


class InferenceWorker(models.Model):
    name = models.CharField(max_length=200, unique=True, help_text="host:pid:random, unique per process")
    channel_name = models.CharField(max_length=200, help_text="its channel on the channel layer")
    device = models.CharField(max_length=32)
    model_name = models.CharField(max_length=200, blank=True, help_text="the model it loaded first")
    max_sessions = models.PositiveIntegerField()
    started = models.DateTimeField(auto_now_add=True)
    heartbeat = models.DateTimeField()
    stopped = models.DateTimeField(null=True, blank=True, help_text="set on a clean exit or when found dead")

    def __str__(self) -> str:
        return f"{self.name} ({self.device})"
