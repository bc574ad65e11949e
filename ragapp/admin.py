from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from ragapp.models import User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    pass
