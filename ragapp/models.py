from django.contrib.auth.models import AbstractUser


class User(AbstractUser):
    """The project's user model, created in the first migration as Django recommends."""

    class Meta:
        db_table = "ragapp_user"
