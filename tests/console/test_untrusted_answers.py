"""A model's answer opened in the browser of a user signed in to the console (the same origin): an audit's
model answered text/html with a script, a page on another site form-POSTed to a presigned InvokeEndpoint
URL of its endpoint, and the script read the admin's CSRF token and called the console's API as the admin.
A model's answers now come sandboxed (no script, no request, an origin of their own) and never sniffed."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import html
import http.server
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from console.ui import T, sign_in
from zeroscale.testing import ACCESS_KEY, SECRET_KEY, ServerProcess, deploy, make_tar

FORM_TYPE = "application/x-www-form-urlencoded"
FORM_BODY = b"a=b"  # what the form below sends

HTML_MODEL = """
def model_fn(model_dir):
    return None


def transform_fn(model, body, content_type, accept):
    page = (
        "<html><body><p id=answer>the model's page</p><script>"
        "document.title = 'RAN';"
        "fetch('/console/api/session').then(r => r.json())"
        ".then(s => { document.title = 'READ ' + s.CsrfToken; });"
        "</script></body></html>"
    )
    return page, "text/html"
"""


def presigned_post(base_url: str, path: str) -> str:
    """A query-string SigV4 URL for a POST of FORM_BODY as FORM_TYPE: what a page on any site can send
    from a signed-in user's browser (its signer's own key; valid a week)."""
    now = datetime.datetime.now(datetime.UTC)
    amz, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/us-east-1/sagemaker/aws4_request"
    params = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{ACCESS_KEY}/{scope}",
        "X-Amz-Date": amz,
        "X-Amz-Expires": "604800",
        "X-Amz-SignedHeaders": "content-type;host",
    }

    def quote(value: str) -> str:
        return urllib.parse.quote(value, safe="-_.~")

    query = "&".join(f"{quote(k)}={quote(v)}" for k, v in sorted(params.items()))
    host = urllib.parse.urlsplit(base_url).netloc
    canonical = "\n".join(
        [
            "POST",
            urllib.parse.quote(path, safe="/~"),
            query,
            f"content-type:{FORM_TYPE}\nhost:{host}\n",
            "content-type;host",
            hashlib.sha256(FORM_BODY).hexdigest(),
        ]
    )
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + SECRET_KEY).encode()
    for part in (day, "us-east-1", "sagemaker", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{base_url}{path}?{query}&X-Amz-Signature={signature}"


@pytest.fixture(scope="module")
def html_endpoint(console_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    root: Path = tmp_path_factory.mktemp("html-model")
    url = f"file://{make_tar(root / 'model.tar.gz', {'code/inference.py': HTML_MODEL.encode()})}"
    desc = deploy(console_server.client("sagemaker"), "html-answer", url)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    return "html-answer"


@pytest.fixture(scope="module")
def elsewhere(console_server: ServerProcess, html_endpoint: str) -> Iterator[str]:
    """A page on another site (localhost, not 127.0.0.1) that submits the form at once."""
    target = presigned_post(console_server.url, f"/endpoints/{html_endpoint}/invocations")
    page = (
        f'<!doctype html><form id=f method=POST action="{html.escape(target)}" enctype="{FORM_TYPE}">'
        "<input type=hidden name=a value=b></form><script>document.getElementById('f').submit()</script>"
    ).encode()

    class Site(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Site)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    yield f"http://localhost:{site.server_address[1]}/"
    site.shutdown()
    site.server_close()


@pytest.fixture()
def page(browser: Browser, console_server: ServerProcess) -> Iterator[Page]:
    context = browser.new_context(base_url=console_server.url)
    page = context.new_page()
    page.set_default_timeout(T)
    yield page
    context.close()


def test_a_models_html_answer_runs_nothing_in_a_signed_in_browser(
    page: Page, console_server: ServerProcess, elsewhere: str
) -> None:
    page.goto("/console/signin")
    sign_in(page, SECRET_KEY)
    expect(page.get_by_role("heading", name="Endpoints", exact=True)).to_be_visible()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(elsewhere)
    page.wait_for_url("**/endpoints/html-answer/invocations?**")
    expect(page.locator("#answer")).to_have_text("the model's page")  # shown, as the model's
    page.wait_for_timeout(1000)  # what its script would have done by now
    assert page.title() == ""  # its script never ran
    assert not [url for url in requests if "/console/api/" in url], requests
