"""The grid worker's phone page (网格员, ``/m/``): sign-in, my grid, foot patrols, event reports,
tasks.

``accounts`` signs workers in (phone + password, or a one-time code an admin prints) and makes
their sessions; ``grid`` is the worker's view of a grid (coverage by vehicle and on foot, blind
spots, alert points, vehicles); ``patrols`` stores foot-patrol fixes through the normal ingest
path under the worker's handheld device; ``reports`` turns a report with photos into an
incident; ``photos`` checks images by their content; ``tasks`` drives the dispatch workflow for
incidents assigned to the worker. A worker's scope is their grids: anything else is 404.
"""
