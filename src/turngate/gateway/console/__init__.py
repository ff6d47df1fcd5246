"""turngate's own console at ``/console``: the turn coordination, live.

A static page (HTML, CSS, vanilla JavaScript modules in ``static/``; no build step, nothing
fetched from elsewhere) over JSON endpoints under ``/console/api/`` and one server-sent event
stream of the engine's events. The parts:

- :mod:`~turngate.gateway.console.access`: the sign-in cookie, and which paths are open;
- :mod:`~turngate.gateway.console.signin`: sign-in and sign-out;
- :mod:`~turngate.gateway.console.origin`: the same-origin rule for every ``POST``;
- :mod:`~turngate.gateway.console.page`: the page and its static files;
- :mod:`~turngate.gateway.console.views`: what the API shows of sessions, turns, transcripts;
- :mod:`~turngate.gateway.console.figures`: the metrics summary;
- :mod:`~turngate.gateway.console.api`: the ``GET`` endpoints;
- :mod:`~turngate.gateway.console.actions`: abort, unstick, run a cron job now;
- :mod:`~turngate.gateway.console.chat`: send a message, stream its reply;
- :mod:`~turngate.gateway.console.feed`: the live event stream;
- :mod:`~turngate.gateway.console.routes`: every route, in one list.

This package's ``__init__`` imports nothing: the token middleware imports ``access``, and
the rest imports the middleware's module.
"""
