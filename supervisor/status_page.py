"""The status page (`GET /`) and its dependency graph (`GET /graph.svg`).

The page is one HTML file from package data (`supervisor/web/status.html`) with its CSS and
script inline: no CDN, no fonts, nothing from the network. It reads `/v1/status` and
`/v1/events`, follows `/v1/events/stream`, and sends the operator's token as the API's bearer
token. The graph is laid out here, by dependency level, and coloured by the page.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from importlib import resources

from aiohttp import web

from supervisor.config import StackConfig

NODE_W, NODE_H = 168, 38
COL_GAP, ROW_GAP, MARGIN = 104, 22, 16
# Strict: the page's own inline script and style, nothing from anywhere else.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

ConfigSource = Callable[[], StackConfig]
CONFIG: web.AppKey[ConfigSource] = web.AppKey("page_config")


def page_html() -> str:
    return resources.files("supervisor").joinpath("web/status.html").read_text(encoding="utf-8")


def graph_svg(config: StackConfig) -> str:
    """The services as boxes in columns by start level, an arrow from each dependency to its
    dependent, labelled with the condition. Nodes carry `data-service` for the page to colour."""
    levels = config.graph().levels()
    place: dict[str, tuple[float, float]] = {}
    for col, level in enumerate(levels):
        for row, name in enumerate(level):
            place[name] = (MARGIN + col * (NODE_W + COL_GAP), MARGIN + row * (NODE_H + ROW_GAP))
    rows = max((len(level) for level in levels), default=0)
    width = MARGIN * 2 + max(len(levels), 1) * (NODE_W + COL_GAP) - COL_GAP
    height = MARGIN * 2 + max(rows, 1) * (NODE_H + ROW_GAP) - ROW_GAP
    edges: list[str] = []
    nodes: list[str] = []
    for name, service in config.services.items():
        x2, y2 = place[name]
        for dep, dependency in service.depends_on.items():
            x1, y1 = place[dep]
            ax, ay, bx, by = x1 + NODE_W, y1 + NODE_H / 2, x2, y2 + NODE_H / 2
            mid = (ax + bx) / 2
            label = dependency.condition.value + (" ↻" if dependency.restart else "")
            edges.append(
                f'<g class="edge" data-from="{escape(dep)}" data-to="{escape(name)}">'
                f'<path d="M{ax:.0f},{ay:.0f} C{mid:.0f},{ay:.0f} {mid:.0f},{by:.0f} '
                f'{bx - 6:.0f},{by:.0f}" marker-end="url(#arrow)"/>'
                f'<text x="{mid:.0f}" y="{(ay + by) / 2 - 4:.0f}">{escape(label)}</text></g>'
            )
        kind = "job" if service.type.value == "job" else "service"
        nodes.append(
            f'<g class="node {kind}" data-service="{escape(name)}" data-state="pending" '
            f'transform="translate({x2:.0f},{y2:.0f})" tabindex="0">'
            f"<title>{escape(name)}</title>"
            f'<rect width="{NODE_W}" height="{NODE_H}" rx="7"/>'
            f'<circle cx="14" cy="{NODE_H / 2:.0f}" r="5"/>'
            f'<text x="26" y="16" class="name">{escape(name[:22])}</text>'
            f'<text x="26" y="30" class="state">pending</text></g>'
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}" role="img" '
        f'aria-label="dependency graph of {escape(config.project)}">'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker>'
        "</defs>" + "".join(edges) + "".join(nodes) + "</svg>"
    )


async def get_page(request: web.Request) -> web.Response:
    return web.Response(
        text=page_html(),
        content_type="text/html",
        charset="utf-8",
        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"},
    )


async def get_graph(request: web.Request) -> web.Response:
    svg = graph_svg(request.app[CONFIG]())
    return web.Response(text=svg, content_type="image/svg+xml", charset="utf-8")


def add_status_page(app: web.Application, config: ConfigSource) -> None:
    app[CONFIG] = config
    app.router.add_get("/", get_page)
    app.router.add_get("/graph.svg", get_graph)
