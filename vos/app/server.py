"""The HTTP layer of ``vos app``: a small JSON API over an :class:`~vos.app.annotator.Annotator` and the page.

Starlette (routing, static files) under uvicorn: both small and well kept, with no build step for
the page, which is plain HTML, CSS and JavaScript drawing on a canvas. Every handler is a plain
function (Starlette runs it in its thread pool), so the network's work never blocks the event loop.

    GET  /                              the page
    GET  /api/info                      video name, frame count and size, the size the network sees
    GET  /api/state                     objects, prompted frames, propagated frames, propagation status
    GET  /api/frames/{k}.jpg            frame k
    GET  /api/results/{k}.png           frame k's id map (8-bit grey, value = object id); 404 if none
    GET  /api/prompts/{k}               frame k's prompts [{object, box} | {object, mask: true}]
    POST /api/objects                   {name?, colour?} → the new object
    PATCH /api/objects/{id}             {name?, colour?}
    DELETE /api/objects/{id}            removes it from prompts and results
    POST /api/prompts/{k}               {object, box: [x0, y0, x1, y1]} | {object, mask: "data:image/png;base64,…"}
    DELETE /api/prompts/{k}/{id}
    POST /api/propagate                 {frame, direction: forward | backward | both}
    POST /api/stop
    POST /api/export                    {format: davis | binary | coco | overlay} → {path}

Errors a person can cause answer 400 with ``{"error": message}``; anything else answers 500 with
the exception's text, and the server keeps running.
"""

from __future__ import annotations

import base64
import binascii
import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from vos.app.annotator import Annotator
from vos.errors import VosError

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("vos.app")


def create_app(annotator: Annotator) -> Starlette:
    """The ASGI application serving ``annotator``."""
    a = annotator

    def info(request: Request):
        return JSONResponse(a.info())

    def state(request: Request):
        return JSONResponse(a.state())

    def frame(request: Request):
        return Response(a.frame_jpeg(_int(request.path_params["k"])), media_type="image/jpeg",
                        headers={"Cache-Control": "max-age=3600"})

    def result(request: Request):
        png = a.result_png(_int(request.path_params["k"]))
        if png is None:
            return JSONResponse({"error": "not propagated yet"}, status_code=404)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    def prompts(request: Request):
        return JSONResponse(a.prompts(_int(request.path_params["k"])))

    async def add_object(request: Request):
        body = await _json(request)
        return JSONResponse(await _run(request, a.add_object, body.get("name"), body.get("colour")))

    async def update_object(request: Request):
        body = await _json(request)
        obj = _int(request.path_params["obj"])
        return JSONResponse(await _run(request, a.update_object, obj, body.get("name"), body.get("colour")))

    async def delete_object(request: Request):
        await _run(request, a.delete_object, _int(request.path_params["obj"]))
        return JSONResponse({"ok": True})

    async def set_prompt(request: Request):
        body = await _json(request)
        k, obj = _int(request.path_params["k"]), _int(body.get("object"))
        if "box" in body:
            await _run(request, a.set_box, k, obj, body["box"])
        elif "mask" in body:
            await _run(request, a.set_mask, k, obj, _data_url(body["mask"]))
        else:
            raise VosError("a prompt needs a box or a mask")
        return JSONResponse({"ok": True})

    async def clear_prompt(request: Request):
        await _run(request, a.clear_prompt, _int(request.path_params["k"]), _int(request.path_params["obj"]))
        return JSONResponse({"ok": True})

    async def propagate(request: Request):
        body = await _json(request)
        await _run(request, a.propagate, _int(body.get("frame")), str(body.get("direction", "forward")))
        return JSONResponse({"ok": True})

    def stop(request: Request):
        a.stop()
        return JSONResponse({"ok": True})

    async def export(request: Request):
        body = await _json(request)
        path = await _run(request, a.export, str(body.get("format")))
        return JSONResponse({"path": str(path)})

    def index(request: Request):
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/state", state),
        Route("/api/frames/{k}.jpg", frame),
        Route("/api/results/{k}.png", result),
        Route("/api/prompts/{k}", prompts),
        Route("/api/prompts/{k}", set_prompt, methods=["POST"]),
        Route("/api/prompts/{k}/{obj}", clear_prompt, methods=["DELETE"]),
        Route("/api/objects", add_object, methods=["POST"]),
        Route("/api/objects/{obj}", update_object, methods=["PATCH"]),
        Route("/api/objects/{obj}", delete_object, methods=["DELETE"]),
        Route("/api/propagate", propagate, methods=["POST"]),
        Route("/api/stop", stop, methods=["POST"]),
        Route("/api/export", export, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    handlers = {VosError: _user_error, Exception: _server_error}
    return Starlette(routes=routes, exception_handlers=handlers)


async def _run(request: Request, function, *args):
    """Run a blocking annotator call in the thread pool (a mask decode or an export can take a while)."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(function, *args)


async def _json(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise VosError("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise VosError("the request body must be a JSON object")
    return body


def _int(value) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise VosError(f"{value!r} is not an integer") from None


def _data_url(value) -> bytes:
    if not isinstance(value, str) or not value.startswith("data:image/png;base64,"):
        raise VosError("a mask is sent as a data:image/png;base64 URL")
    try:
        return base64.b64decode(value.split(",", 1)[1], validate=True)
    except (binascii.Error, ValueError):
        raise VosError("the mask's base64 data is corrupt") from None


async def _user_error(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=400)


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("vos app: %s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)


def serve(annotator: Annotator, host: str = "127.0.0.1", port: int = 8765, on_start=None) -> Server:
    """Serve until interrupted (Ctrl-C) or :meth:`Server.stop`. ``on_start(url)`` is called once the
    socket listens (port 0: a free port)."""
    server = Server(annotator, host, port)
    if on_start is not None:
        on_start(server.url)
    server.run()
    return server


class Server:
    """uvicorn on a socket bound here, so the address is known (and taken) before serving starts."""

    def __init__(self, annotator: Annotator, host: str = "127.0.0.1", port: int = 8765) -> None:
        import socket

        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except OSError as exc:
            self.socket.close()
            raise VosError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose another --port)") from None
        self.socket.listen(64)
        bound_host, bound_port = self.socket.getsockname()[:2]
        shown = f"[{bound_host}]" if family == socket.AF_INET6 else bound_host
        self.url = f"http://{shown}:{bound_port}/"
        config = uvicorn.Config(create_app(annotator), log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)

    def run(self) -> None:
        try:
            self._server.run(sockets=[self.socket])
        finally:
            self.socket.close()

    def stop(self) -> None:
        """Ask a running server (in another thread) to finish."""
        self._server.should_exit = True
