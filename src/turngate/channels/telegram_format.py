"""The model's Markdown as Telegram HTML.

Telegram's HTML needs only ``<``, ``>`` and ``&`` escaped, and a tag soup it cannot parse is
refused as a whole, so the output is built from matched spans only: a marker without its
partner (a part cut mid-span by the splitter) stays literal text. When Telegram refuses the
entities anyway, the channel sends the part again as plain text.
"""

from __future__ import annotations

import html
import re

_FENCE = re.compile(
    r"^```[ \t]*(?P<lang>[\w+#.-]*)[^\n]*\n(?P<body>.*?)(?:^```[ \t]*$|\Z)", re.M | re.S
)
_INLINE = re.compile(
    r"(?P<ticks>`+)(?P<code>.+?)(?P=ticks)"
    r"|\[(?P<label>[^\]\n]+)\]\((?P<url>(?:https?|tg|mailto):[^()\s]+)\)"
    r"|\*\*(?P<bold>\S(?:.*?\S)??)\*\*"
    r"|__(?P<bold2>\S(?:.*?\S)??)__"
    r"|\*(?P<italic>[^\s*](?:[^*\n]*?[^\s*])?)\*"
    r"|(?<!\w)_(?P<italic2>[^\s_](?:[^_\n]*?[^\s_])?)_(?!\w)"
)
NESTING_MAX = 8
"""Spans nest this deep at most; deeper markers stay text (bounded recursion)."""


def telegram_html(markdown: str) -> str:
    """``markdown`` as Telegram HTML: fenced code blocks, inline code, bold (``**``/``__``),
    italic (``*``/``_``) and ``[links](https://...)``; everything else escaped text."""
    out: list[str] = []
    at = 0
    for fence in _FENCE.finditer(markdown):
        out.append(_inline(markdown[at : fence.start()], 0))
        body = html.escape(fence["body"].removesuffix("\n"), quote=False)
        lang = fence["lang"]
        out.append(
            f'<pre><code class="language-{lang}">{body}</code></pre>'
            if lang
            else f"<pre>{body}</pre>"
        )
        at = fence.end()
    out.append(_inline(markdown[at:], 0))
    return "".join(out)


def _inline(text: str, depth: int) -> str:
    if depth >= NESTING_MAX:
        return html.escape(text, quote=False)
    out: list[str] = []
    at = 0
    for span in _INLINE.finditer(text):
        out.append(html.escape(text[at : span.start()], quote=False))
        out.append(_span(span, depth + 1))
        at = span.end()
    out.append(html.escape(text[at:], quote=False))
    return "".join(out)


def _span(span: re.Match[str], depth: int) -> str:
    if span["code"] is not None:
        return f"<code>{html.escape(span['code'], quote=False)}</code>"
    if span["url"] is not None:
        href = html.escape(span["url"], quote=True)
        return f'<a href="{href}">{_inline(span["label"], depth)}</a>'
    bold = span["bold"] if span["bold"] is not None else span["bold2"]
    if bold is not None:
        return f"<b>{_inline(bold, depth)}</b>"
    italic = span["italic"] if span["italic"] is not None else span["italic2"]
    return f"<i>{_inline(italic, depth)}</i>"
