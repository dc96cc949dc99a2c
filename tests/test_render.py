"""DAG pictures: transparent behind the nodes, so a notebook's dark theme shows no white box."""

from __future__ import annotations

import re
import shutil

import pytest

from nbflow.render import render, to_dot

DEFINITION = {
    "name": "p",
    "tasks": [{"id": "a", "kind": "python", "upstream": []}, {"id": "b", "kind": "notebook", "upstream": ["a"]}],
}


def test_dot_has_no_white_page():
    dot = to_dot(DEFINITION, {"a": "success"})
    assert 'bgcolor="transparent"' in dot
    assert 'edge [color="#8a8a8a"' in dot  # grey edges read on light and dark backgrounds


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is not installed (apt-get install graphviz)")
def test_rendered_svg_background_is_transparent():
    svg = render(to_dot(DEFINITION, {"a": "success"}), "svg").decode()
    page = svg[svg.index('<g id="graph0"') : svg.index('class="node')]
    assert "<polygon" not in page, page  # graphviz draws no page at all (it drew a white one)
    assert re.search(r'<g id="task&#45;a" class="node nbflow&#45;success">', svg)
