"""report.html beside a folder's report.md: the same report as one self-contained page.

The markdown is converted with Python-Markdown (tables, fenced code). The page needs nothing
but itself: every figure the report shows is inlined as a base64 `data:` URI, the style sheet
and the script that sorts a table when its header is clicked are inline, and no `src` or `href`
points outside the page (a link to the web becomes plain text). Raw HTML in the markdown (a
config's description is the user's text) is shown as text, never run.

Reads the figures beside the report; writes only through study/files.py.
"""

from __future__ import annotations

import base64
import html
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from actreg_cli.study.files import write_text

REPORT_HTML = "report.html"

#: The figure formats inlined, by file suffix.
IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
}

#: A link target with a scheme (http:, https:, javascript:, data:, ...) or a network path (//).
EXTERNAL = re.compile(r"^\s*([a-zA-Z][a-zA-Z0-9+.-]*:|//)")

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; line-height: 1.45;
  max-width: 72rem; margin: 1.5rem auto; padding: 0 1rem; color: #1f2328; background: #fff; }
h1, h2, h3 { line-height: 1.2; } h1 { border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; }
h2 { margin-top: 2rem; border-bottom: 1px solid #eaeef2; padding-bottom: .2rem; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: .9em; background: #f6f8fa; border-radius: 4px; }
code { padding: .1em .3em; } pre { padding: .7rem; overflow-x: auto; }
pre code { padding: 0; background: none; }
.table-wrap { overflow-x: auto; margin: 1rem 0; }
table { border-collapse: collapse; font-size: .92em; }
th, td { border: 1px solid #d0d7de; padding: .3rem .6rem; text-align: left; vertical-align: top; }
thead th { background: #f6f8fa; position: sticky; top: 0; }
tbody tr:nth-child(even) { background: #fafbfc; }
th.sortable { cursor: pointer; user-select: none; white-space: nowrap; }
th.sortable::after { content: " \\2195"; color: #8c959f; }
th[aria-sort="ascending"]::after { content: " \\25B2"; color: #1f2328; }
th[aria-sort="descending"]::after { content: " \\25BC"; color: #1f2328; }
img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
.missing { color: #b35900; font-style: italic; }
.note { color: #57606a; font-size: .85em; }
"""

#: Sorts a table by the clicked header: numbers (a cell's leading number, e.g. 0.514 of
#: '0.514 ± 0.040') by value, other text alphabetically; cells without a number go last; a
#: second click reverses. Key-value tables (an empty header) keep their order. Plain DOM
#: calls: works offline in any browser.
SCRIPT = r"""
(function () {
  var NUMBER = /^\s*\*{0,2}\s*([+\-\u2212]?(?:\d+\.?\d*|\.\d+)(?:e[+\-]?\d+)?)/i;
  function key(cell) {
    var text = cell.textContent.trim();
    var match = NUMBER.exec(text);
    return match ? {num: parseFloat(match[1].replace("\u2212", "-")), text: text}
                 : {num: null, text: text};
  }
  function compare(a, b) {
    if (a.num !== null && b.num !== null) { return a.num - b.num; }
    if (a.num !== null) { return -1; }
    if (b.num !== null) { return 1; }
    return a.text.localeCompare(b.text, undefined, {numeric: true});
  }
  Array.prototype.forEach.call(document.querySelectorAll("table"), function (table) {
    var body = table.tBodies[0];
    if (!body || !table.tHead || body.rows.length < 2) { return; }
    var headers = table.tHead.rows[0].cells;
    // A key-value table ("| study | |") has an empty header: its order is the reading order.
    if (Array.prototype.some.call(headers, function (h) { return !h.textContent.trim(); })) {
      return;
    }
    Array.prototype.forEach.call(headers, function (th, column) {
      th.className = "sortable";
      th.title = "Click to sort by this column";
      th.addEventListener("click", function () {
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(headers, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var rows = Array.prototype.slice.call(body.rows).map(function (row, index) {
          return {row: row, key: key(row.cells[column] || row.cells[0]), index: index};
        });
        rows.sort(function (a, b) {
          var order = compare(a.key, b.key);
          return (ascending ? order : -order) || a.index - b.index;
        });
        rows.forEach(function (r) { body.appendChild(r.row); });
      });
    });
  });
})();
"""


def image_data_uri(folder: Path, src: str) -> str | None:
    """The figure `src` (a file name directly in `folder`) as a base64 data URI; None when it
    is no figure beside the report (missing, another folder, a URL, another format)."""
    if EXTERNAL.match(src) or "/" in src or "\\" in src or src in ("", ".", ".."):
        return None
    path = folder / src
    mime = IMAGE_TYPES.get(path.suffix.lower())
    if mime is None or not path.is_file():
        return None
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def self_contained(root: ET.Element, folder: Path) -> None:
    """Make the converted page need nothing outside itself: inline each figure, turn each
    external link into text, and wrap each table so that a wide one scrolls on its own."""
    parents = {child: parent for parent in root.iter() for child in parent}
    for element in list(root.iter()):
        if element.tag == "img":
            src = element.get("src", "")
            uri = image_data_uri(folder, src)
            if uri is not None:
                element.set("src", uri)
                continue
            # No such figure: say so in words where it would have been.
            element.tag = "span"
            element.attrib.clear()
            element.set("class", "missing")
            element.text = f"[figure not found beside the report: {src}]"
        elif element.tag == "a":
            href = element.get("href", "")
            if EXTERNAL.match(href):
                element.tag = "span"  # the link text stays; the page opens nothing
                element.attrib.clear()
        elif element.tag == "table" and element in parents:
            parent = parents[element]
            index = list(parent).index(element)
            wrapper = ET.Element("div", {"class": "table-wrap"})
            parent.remove(element)
            wrapper.append(element)
            parent.insert(index, wrapper)


def markdown_to_html(text: str, folder: Path, title: str | None = None) -> str:
    """The report `text` (markdown) as a complete, self-contained HTML page; `folder` holds
    the figures it shows (inlined). `title`: the page's title (default: the first heading)."""
    import markdown
    from markdown.treeprocessors import Treeprocessor

    class SelfContained(Treeprocessor):
        def run(self, root: ET.Element) -> None:
            self_contained(root, folder)

    converter = markdown.Markdown(extensions=["tables", "fenced_code", "sane_lists"])
    # Raw HTML in the text is shown as text: a description is the user's words, not markup.
    converter.preprocessors.deregister("html_block")
    converter.inlinePatterns.deregister("html")
    # After the inline patterns (priority 20) have made the <img> and <a> elements.
    converter.treeprocessors.register(SelfContained(converter), "self_contained", 5)
    body = converter.convert(text)
    if title is None:
        heading = re.search(r"^#\s+(.+)$", text, flags=re.MULTILINE)
        title = heading.group(1).replace("`", "").strip() if heading else folder.name
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{STYLE}</style>",
            "</head>",
            "<body>",
            body,
            '<p class="note">Written by actreg beside report.md; self-contained (figures '
            "inline, no network). Click a table's header to sort by that column.</p>",
            f"<script>{SCRIPT}</script>",
            "</body>",
            "</html>",
            "",
        ]
    )


def write_report_html(markdown_path: Path) -> Path:
    """Write report.html beside `markdown_path` (a folder's report.md), from its text and the
    figures beside it; return its path."""
    markdown_path = Path(markdown_path)
    text = markdown_path.read_text(encoding="utf-8")
    folder = markdown_path.parent
    return write_text(folder / REPORT_HTML, markdown_to_html(text, folder))
