"""report.html: the run's report.md as one self-contained page that opens from disk.

The page makes no network request and runs no script: plots are embedded as data URIs, the only
link is the gallery's relative path, and a Content-Security-Policy (`default-src 'none'`) forbids
anything else, so a file name carrying `<script>` is shown as text, escaped, and could not run even
if it were not. The converter knows the Markdown the engine writes (headings, paragraphs, lists, pipe
tables, images, links, `code` and **bold**), not Markdown at large.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_CSS = """body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:12px;display:block;overflow-x:auto}td,th{border:1px solid #ccc;padding:2px 6px}
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}code{background:#f3f3f3;padding:0 3px}
img{max-width:100%}h1{font-size:22px}h2{font-size:18px;margin-top:1.6em}"""
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)]+)\)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)]+)\)")


def _embedded(src: str, base: Path) -> str | None:
    path = (base / src).resolve()
    if path.suffix.lower() != ".png" or not path.is_file() or base.resolve() not in path.parents:
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _safe_href(href: str) -> str | None:
    """Relative links inside the output folder only (no scheme: no javascript:, no network)."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", href) or href.startswith(("/", "\\\\")):
        return None
    return href


def inline(text: str, base: Path) -> str:
    """One line of Markdown text as HTML: escaped first, then the engine's few inline forms."""
    out, pos = [], 0
    for m in _IMAGE.finditer(text):
        out.append(_plain(text[pos:m.start()], base))
        data = _embedded(m.group(2), base)
        alt = html.escape(m.group(1))
        out.append(f"<img alt='{alt}' src='{data}'>" if data else f"<em>[{alt}: not embedded]</em>")
        pos = m.end()
    out.append(_plain(text[pos:], base))
    return "".join(out)


def _plain(text: str, base: Path) -> str:
    parts, pos = [], 0
    for m in _LINK.finditer(text):
        parts.append(_format(html.escape(text[pos:m.start()])))
        href = _safe_href(m.group(2))
        label = _format(html.escape(m.group(1)))
        parts.append(f"<a href='{html.escape(href, quote=True)}'>{label}</a>" if href else label)
        pos = m.end()
    parts.append(_format(html.escape(text[pos:])))
    return "".join(parts)


def _format(escaped: str) -> str:
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", escaped)


def _cells(row: str) -> list[str]:
    row = row.strip()
    row = row[1:] if row.startswith("|") else row
    row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row)]


def markdown_to_html(md: str, base: Path) -> str:
    """The body of the page: block by block."""
    lines, out, i = md.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if m := re.match(r"^(#{1,4}) (.*)$", line):
            level = len(m.group(1))
            out.append(f"<h{level}>{inline(m.group(2), base)}</h{level}>")
            i += 1
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            head, body = _cells(block[0]), [b for b in block[2:]] if len(block) > 1 else []
            rows = "".join("<tr>" + "".join(f"<td>{inline(c, base)}</td>" for c in _cells(r)) + "</tr>" for r in body)
            out.append("<table><tr>" + "".join(f"<th>{inline(c, base)}</th>" for c in head) + f"</tr>{rows}</table>")
        elif re.match(r"^[-*] ", line):
            items = []
            while i < len(lines) and re.match(r"^[-*] ", lines[i]):
                items.append(f"<li>{inline(lines[i][2:], base)}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        elif line.startswith("```"):
            i += 1
            code = []
            while i < len(lines) and not lines[i].startswith("```"):
                code.append(html.escape(lines[i]))
                i += 1
            i += 1
            out.append("<pre>" + "\n".join(code) + "</pre>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not re.match(r"^(#{1,4} |\||[-*] |```)", lines[i]):
                para.append(lines[i])
                i += 1
            out.append(f"<p>{inline(' '.join(para), base)}</p>")
    return "\n".join(out)


def page(md: str, base: Path, title: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"{markdown_to_html(md, base)}</body></html>")


def write_html_report(markdown_path: Path, title: str) -> Path:
    """`<name>.html` beside `<name>.md`, written atomically; returns its path."""
    from engine.report.files import write_text

    target = markdown_path.with_suffix(".html")
    write_text(target, page(markdown_path.read_text(encoding="utf-8"), markdown_path.parent, title))
    return target
