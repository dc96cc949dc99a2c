"""Graph algorithms over plain ``{task_id: set(upstream ids)}`` mappings (pure functions).

* :func:`toposort` -- Kahn's algorithm; ties are broken by definition order so the order is
  stable and readable.
* :func:`find_cycle` -- depth-first search with a colour per node (white/grey/black); the
  first back edge to a grey node closes a cycle, returned as ``[a, b, c, a]`` in edge order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping


def toposort(upstream: Mapping[str, Iterable[str]]) -> list[str]:
    """Task ids so that every task comes after its upstream; raises ValueError on a cycle."""
    ups = {t: set(u) for t, u in upstream.items()}
    children: dict[str, list[str]] = {t: [] for t in ups}
    for t, us in ups.items():
        for u in us:
            children[u].append(t)
    remaining = {t: len(us) for t, us in ups.items()}
    ready = deque(t for t in ups if remaining[t] == 0)  # a deque: a fan-out of 10,000 readies them at once
    order: list[str] = []
    while ready:
        t = ready.popleft()
        order.append(t)
        for c in children[t]:
            remaining[c] -= 1
            if remaining[c] == 0:
                ready.append(c)
    if len(order) != len(ups):
        raise ValueError(f"cycle: {find_cycle(ups)}")
    return order


def find_cycle(upstream: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle as ``[a, b, c, a]`` (a runs before b ...), or None when the graph is a DAG."""
    children: dict[str, list[str]] = {t: [] for t in upstream}
    for t, us in upstream.items():
        for u in us:
            children.setdefault(u, []).append(t)
    color = dict.fromkeys(children, 0)  # 0 white, 1 grey (on the path), 2 black
    for start in children:
        if color[start]:
            continue
        path, stack = [start], [iter(children[start])]
        color[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                color[path.pop()] = 2
                stack.pop()
            elif color[nxt] == 1:
                return path[path.index(nxt) :] + [nxt]
            elif color[nxt] == 0:
                color[nxt] = 1
                path.append(nxt)
                stack.append(iter(children[nxt]))
    return None
