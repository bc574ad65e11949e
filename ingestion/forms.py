from django import forms
from django.utils.translation import gettext_lazy as _

from ingestion.models import KnowledgeBase


class KnowledgeBaseForm(forms.ModelForm):
    class Meta:
        model = KnowledgeBase
        fields = ["name", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}


class UrlForm(forms.Form):
    url = forms.URLField(label=_("Web page address"), max_length=2000, assume_scheme="https")
