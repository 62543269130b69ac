"""Showing user text safely: as literal characters, never as markup.

Streamlit renders Markdown in ``st.markdown``, ``st.error``, ``st.caption`` and friends (raw HTML
stays off: no page uses ``unsafe_allow_html``), and Plotly reads a few HTML tags inside labels.
A file name like ``[x](javascript:...)`` or a class called ``<b>`` must appear as typed.
"""

from __future__ import annotations

import html
import string

_MARKDOWN_ESCAPES = {ord(char): "\\" + char for char in string.punctuation}


def plain_markdown(text: object) -> str:
    """Backslash-escape every ASCII punctuation mark, so Markdown shows ``text`` literally.

    CommonMark lets any ASCII punctuation be escaped; that also disables Streamlit's own
    ``:red[...]`` colours, ``:emoji:`` short codes and ``$...$`` math.
    """
    return str(text).translate(_MARKDOWN_ESCAPES)


def plot_text(text: object) -> str:
    """Escape a label for Plotly, which would otherwise interpret tags such as ``<a href>``."""
    return html.escape(str(text), quote=False)
