from django.apps import AppConfig


class InteractiveConfig(AppConfig):
    name = "webapp.interactive"
    label = "interactive"
    verbose_name = "Interactive service"
