"""Site-wide response headers."""

from __future__ import annotations

from django.conf import settings


class ContentSecurityPolicyMiddleware:
    """Puts settings.RAG_CONTENT_SECURITY_POLICY on every HTML page that has no policy of its own.

    Defence in depth against XSS: even if some text reached a page unescaped, the browser
    would run no inline script and load nothing from another origin. Responses that set
    their own policy (the original-file view sends `sandbox`) keep it.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        policy = settings.RAG_CONTENT_SECURITY_POLICY
        if (
            policy
            and "Content-Security-Policy" not in response
            and response.get("Content-Type", "").startswith("text/html")
        ):
            response["Content-Security-Policy"] = policy
        return response
