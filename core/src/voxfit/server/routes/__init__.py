"""The HTTP API, one router per concern; ``voxfit.server.app.create_app`` assembles them.

* :mod:`.service`  health, readiness, metrics and the models list;
* :mod:`.voices`   the voices offered, with the options each one's engine takes;
* :mod:`.planning` each voice's plan, this machine's state, estimates for a text;
* :mod:`.speech`   OpenAI's speech endpoint and voxfit's own (``/v1/tts``).

A route reads the server's state from the app (:func:`state`), translates its
request into the lifecycle's terms, and answers in its own.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from voxfit.server.state import ServerState


def state(request: Request) -> ServerState:
    """The server's shared state, read from the app."""
    found: ServerState = request.app.state.voxfit
    return found


#: A route's argument for the server's state.
State = Annotated[ServerState, Depends(state)]
