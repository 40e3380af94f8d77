from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


@login_required
def app_page(request: HttpRequest) -> HttpResponse:
    """The single-page frontend, built by Vite into frontend/dist."""
    index = settings.BASE_DIR / "frontend" / "dist" / "index.html"
    if not index.exists():
        return render(request, "frontend_missing.html", status=503)
    return HttpResponse(index.read_text(), content_type="text/html; charset=utf-8")
