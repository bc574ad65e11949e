from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils.translation import gettext_lazy as _

from ingestion.models import KnowledgeBase, Role


class KnowledgeBaseForm(forms.ModelForm):
    class Meta:
        model = KnowledgeBase
        fields = ["name", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}


class KnowledgeBaseSettingsForm(KnowledgeBaseForm):
    """Owners: name, description and the abstention threshold (empty: calibrated/default)."""

    class Meta(KnowledgeBaseForm.Meta):
        fields = ["name", "description", "abstain_threshold", "require_review"]
        labels = {
            "abstain_threshold": _("Answer only above this confidence (0–1)"),
            "require_review": _("Review contributions"),
        }
        help_texts = {
            "require_review": _(
                "Documents uploaded by contributors wait until an editor or owner approves "
                "them; until then they are not indexed nor visible to others."
            ),
            "abstain_threshold": _(
                "The chat says the documents do not answer when its calibrated confidence "
                "is below this value. Leave empty to use the value calibrated from your "
                "question/document pairs, or the default."
            ),
        }

    def clean_abstain_threshold(self):
        value = self.cleaned_data["abstain_threshold"]
        if value is not None and not 0 <= value <= 1:  # also refuses NaN and infinity
            raise forms.ValidationError(_("Enter a number between 0 and 1."))
        return value


class UrlForm(forms.Form):
    url = forms.URLField(label=_("Web page address"), max_length=2000, assume_scheme="https")


class MemberForm(forms.Form):
    """The owner adds an existing user, by username, as an editor, a contributor or a viewer."""

    username = forms.CharField(label=_("Username"), max_length=150)
    role = forms.ChoiceField(
        label=_("Role"),
        choices=[
            (Role.EDITOR, _("Editor")),
            (Role.CONTRIBUTOR, _("Contributor")),
            (Role.VIEWER, _("Viewer")),
        ],
        initial=Role.VIEWER,
    )

    def __init__(self, *args, knowledge_base: KnowledgeBase, **kwargs):
        super().__init__(*args, **kwargs)
        self.knowledge_base = knowledge_base

    def clean_username(self):
        username = self.cleaned_data["username"].strip()
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise forms.ValidationError(_("There is no user with this username."))
        if user.pk == self.knowledge_base.owner_id:
            raise forms.ValidationError(_("This user owns the knowledge base."))
        self.cleaned_data["user"] = user
        return username


class GroupMemberForm(forms.Form):
    """The owner gives one of the groups staff created a role; every member of it gets it."""

    group = forms.ModelChoiceField(
        label=_("Group"), queryset=Group.objects.order_by("name"), to_field_name="name"
    )
    role = forms.ChoiceField(
        label=_("Role"),
        choices=[
            (Role.EDITOR, _("Editor")),
            (Role.CONTRIBUTOR, _("Contributor")),
            (Role.VIEWER, _("Viewer")),
        ],
        initial=Role.VIEWER,
    )


class ThresholdForm(forms.ModelForm):
    """The reranker cut-offs an owner tunes on the hit-testing page (empty: site default)."""

    class Meta:
        model = KnowledgeBase
        fields = ["rerank_top_k", "rerank_min_score", "rerank_max_drop"]
        labels = {
            "rerank_top_k": _("Keep at most (top k)"),
            "rerank_min_score": _("Minimum rerank score"),
            "rerank_max_drop": _("Maximum drop from the best score (0–1)"),
        }

    def clean_rerank_max_drop(self):
        value = self.cleaned_data["rerank_max_drop"]
        if value is not None and not 0 <= value <= 1:
            raise forms.ValidationError(_("Enter a number between 0 and 1."))
        return value
