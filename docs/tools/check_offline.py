"""Fail if a built HTML page loads a script, stylesheet, image or font from the network.

Usage: python docs/tools/check_offline.py docs/_build/html
Links (<a href>) may point anywhere; only what the browser fetches to render the page counts.
"""

import pathlib
import re
import sys

# src= on script/img/iframe/source, href= on <link> (stylesheets, fonts, preloads), url() in inline CSS
_FETCHED = re.compile(
    r"""<(?:script|img|iframe|source|audio|video|embed)\b[^>]*\bsrc\s*=\s*["']?\s*((?:https?:)?//[^"'\s>]+)"""
    r"""|<link\b[^>]*\bhref\s*=\s*["']?\s*((?:https?:)?//[^"'\s>]+)"""
    r"""|url\(\s*["']?((?:https?:)?//[^)"']+)""",
    re.IGNORECASE,
)


def external_fetches(html):
    return [next(g for g in m.groups() if g) for m in _FETCHED.finditer(html)]


def main(root):
    pages = sorted(pathlib.Path(root).rglob("*.html"))
    if not pages:
        print(f"check_offline: no HTML pages under {root}", file=sys.stderr)
        return 1
    bad = []
    for page in pages:
        for url in external_fetches(page.read_text(encoding="utf-8", errors="replace")):
            bad.append(f"{page}: {url}")
    if bad:
        print("check_offline: pages load from the network:\n  " + "\n  ".join(bad[:20]), file=sys.stderr)
        return 1
    print(f"check_offline: {len(pages)} pages, nothing loaded from the network")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/_build/html"))
