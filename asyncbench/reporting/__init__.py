"""Reporting: the HTML page, built from the store as data, then rendered by a template. It
imports judging, planning and storing, never measuring; the CLI builds the page after a run.

- ``report``: the page, plain data first, then ``templates/report.html``.
- ``view``: the view model: a page section and how numbers are shown.
- ``summary``: the first screen, scenario by model.
- ``verdicts``: each section's verdict in words.
- ``tables``: each section's per-level table, columns declared once.
- ``figures``: the charts as plotly figure specs.
- ``room_section``: the room kind's section, beside the request kind's.
- ``export``: the raw ``.hlog`` export beside the page, one log per level.
- ``display``: the live progress display of ``asyncbench run`` (it answers the runner's hooks).
"""
