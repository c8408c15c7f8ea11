"""``vos app``: annotate a video in the browser with the same engine as ``vos segment``.

:class:`Annotator` holds the video, objects, prompts and results in a workspace folder;
:func:`create_app` / :class:`Server` serve it over HTTP (needs the ``app`` extra: starlette, uvicorn).
"""

from vos.app.annotator import Annotator

__all__ = ["Annotator", "Server", "create_app"]


def __getattr__(name: str):
    # the HTTP layer needs the app extra; the annotator does not
    if name in ("Server", "create_app"):
        from vos.app import server

        return getattr(server, name)
    raise AttributeError(f"module 'vos.app' has no attribute {name!r}")
