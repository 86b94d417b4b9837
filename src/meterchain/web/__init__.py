"""The web interface and JSON API: FastAPI, Jinja2 + htmx pages, ECharts, server-sent events."""
