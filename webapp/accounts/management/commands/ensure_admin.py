import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Create the 'admin' superuser if no superuser exists. The password comes from "
        "ANNOVOX_ADMIN_PASSWORD, or is generated and printed once."
    )

    def handle(self, **options: object) -> None:
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            return
        username = os.environ.get("ANNOVOX_ADMIN_USER", "admin")
        password = os.environ.get("ANNOVOX_ADMIN_PASSWORD")
        generated = not password
        password = password or secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        if generated:
            self.stdout.write(
                self.style.WARNING(
                    f"Created the administrator account '{username}' with password: {password}\n"
                    "It is shown only this once; change it after signing in."
                )
            )
        else:
            self.stdout.write(
                f"Created the administrator account '{username}' (password from the environment)."
            )
