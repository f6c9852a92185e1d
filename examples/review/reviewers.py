"""Two reviewers and an adjudicator work a review project through the real web app.

They are scripts, not people, standing in for them in the worked example so that every
step runs as shipped: each signs in with a password, takes items from their own queue,
answers through the same forms a browser posts (with the CSRF token), and the adjudicator
settles what they disagreed on. The judging rule is the guideline's: the answer that
names the reference team wins, else a tie. The second reviewer is careless on a seeded
share of items (answers at random), so the disagreement path runs; say so when quoting
the agreement figures.

    python reviewers.py http://127.0.0.1:8100 --reviewers ann ben --adjudicator cy \
        --password-file passwords.txt --project quickstart-review --careless 0.15

Standard library only (the app's cookies are Secure; urllib's cookie jar would not send
them over http to 127.0.0.1, so this client keeps its cookie itself).
"""

from __future__ import annotations

import argparse
import html
import random
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

TIMEOUT_S = 30


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # follow redirects by hand, cookies kept
        return None


class Browser:
    """A signed-in user of the review app: one session cookie, pages as text."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.cookies: dict[str, str] = {}
        self.opener = urllib.request.build_opener(_NoRedirect)

    def _send(self, path: str, data: dict | None = None) -> tuple[int, str, str]:
        body = None if data is None else urllib.parse.urlencode(data).encode()
        request = urllib.request.Request(self.base + path, data=body)
        if self.cookies:
            request.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        try:
            response = self.opener.open(request, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as e:
            response = e
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if 'expires=Thu, 01 Jan 1970' in header or value in ('""', ""):
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        text = response.read().decode("utf-8")
        return response.status, response.headers.get("Location", ""), text

    def get(self, path: str) -> str:
        status, location, text = self._send(path)
        if status in (302, 303):
            return self.get(location)
        if status != 200:
            raise SystemExit(f"GET {path}: HTTP {status}")
        return text

    def post(self, path: str, data: dict) -> tuple[int, str, str]:
        return self._send(path, data)

    def sign_in(self, name: str, password: str) -> None:
        form = self.get("/login")
        status, _, _ = self.post("/login", {"name": name, "password": password, "next": "/",
                                            "csrf_token": token(form)})
        if status != 303:
            raise SystemExit(f"{name} could not sign in (HTTP {status})")


def token(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def guideline_version(page: str) -> str:
    """The guideline version the page showed (the answer is stored with it)."""
    return re.search(r'name="guideline_version" value="(\d+)"', page).group(1)


def _norm(text: str) -> str:
    return text.strip().rstrip(".").strip().lower()


def judge(page: str) -> str:
    """The guideline's rule on an item page: the answer naming the reference, else tie."""
    ref = re.search(r'<section class="reference"[^>]*><h3>Reference</h3><pre>(.*?)</pre>',
                    page, re.S)
    answers = re.findall(r'<div class="answer"><h3>Answer (\w+)</h3><pre>(.*?)</pre>', page, re.S)
    reference = _norm(html.unescape(ref.group(1))) if ref else ""
    right = [label for label, text in answers if _norm(html.unescape(text)) == reference]
    return right[0] if len(right) == 1 else "tie"


def review(browser: Browser, project: str, careless: float, rng: random.Random) -> int:
    """Answer every item in this reviewer's queue; returns how many."""
    home = browser.get("/")
    status, location, _ = browser.post(f"/projects/{project}/next", {"csrf_token": token(home)})
    done = 0
    while status == 303 and "/items/" in location:
        page = browser.get(location)
        choice = judge(page)
        if rng.random() < careless:
            choice = rng.choice(re.findall(r'name="preferred" value="(\w+)"', page))
        status, location, text = browser.post(location, {
            "csrf_token": token(page), "guideline_version": guideline_version(page),
            "preferred": choice, "correction": ""})
        if status not in (200, 303):
            raise SystemExit(f"answer refused (HTTP {status}): {text[:300]}")
        done += 1
    return done


def adjudicate(browser: Browser, project: str) -> int:
    """Settle every disagreement in the queue by the guideline's rule; returns how many."""
    done = 0
    while True:
        queue = browser.get(f"/projects/{project}/adjudicate")
        found = re.search(rf"/projects/{re.escape(project)}/adjudicate/(\d+)", queue)
        if not found:
            return done
        path = found.group(0)
        page = browser.get(path)
        status, _, text = browser.post(path, {
            "csrf_token": token(page), "guideline_version": guideline_version(page),
            "preferred": judge(page), "correction": ""})
        if status != 303:
            raise SystemExit(f"decision refused (HTTP {status}): {text[:300]}")
        done += 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url", help="the review app, e.g. http://127.0.0.1:8100")
    p.add_argument("--project", required=True, help="the review project")
    p.add_argument("--reviewers", nargs=2, required=True, metavar="NAME", help="two reviewers")
    p.add_argument("--adjudicator", required=True, metavar="NAME", help="the adjudicator")
    p.add_argument("--password-file", required=True,
                   help="lines of NAME PASSWORD for the three users")
    p.add_argument("--careless", type=float, default=0.15,
                   help="share of items the second reviewer answers at random (default 0.15)")
    p.add_argument("--seed", type=int, default=0, help="seeds the careless answers")
    a = p.parse_args(argv)
    passwords = dict(line.split(maxsplit=1) for line in
                     open(a.password_file, encoding="utf-8").read().splitlines() if line.strip())
    rng = random.Random(a.seed)
    for name, careless in zip(a.reviewers, (0.0, a.careless), strict=True):
        browser = Browser(a.url)
        browser.sign_in(name, passwords[name])
        print(f"{name} answered {review(browser, a.project, careless, rng)} items", file=sys.stderr)
    judge_browser = Browser(a.url)
    judge_browser.sign_in(a.adjudicator, passwords[a.adjudicator])
    print(f"{a.adjudicator} settled {adjudicate(judge_browser, a.project)} disagreements",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
