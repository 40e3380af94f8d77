from django.urls import path

from .consumers import InteractiveConsumer

websocket_urlpatterns = [path("ws/interactive/", InteractiveConsumer.as_asgi())]
