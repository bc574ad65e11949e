from django.contrib import admin

from curation.models import FaqEntry, Gap, RegressionRun, SavedCase, ShareLink

admin.site.register([FaqEntry, Gap, SavedCase, RegressionRun, ShareLink])
