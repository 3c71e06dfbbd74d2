"""``voxfit serve``: a long-running speech service on the session layer.

One module per job:

* :mod:`.voices`   plans every ``--model``, checks that the plans fit the memory
  together, and loads one :class:`~voxfit.speaking.session.Session` per worker;
* :mod:`.pool`     admission: one bounded queue per voice, workers that each own
  a session, deadlines that count the queue, cancellation at a sentence boundary;
* :mod:`.encoding` audio formats (WAV, raw PCM, FLAC, MP3, Ogg/Opus) through
  libsndfile, resampling through soxr, both streaming;
* :mod:`.metrics`  Prometheus metrics and the JSON-lines request log;
* :mod:`.system`   live CPU, RAM and device use for ``/v1/system``;
* :mod:`.state`    what the routes share: voices, their pools, limits, metrics;
* :mod:`.bodies`   request bodies (size-capped, validated), voice options, uploads;
* :mod:`.speech`   one speech request from admission to its last byte (whole, streamed, SSE);
* :mod:`.app`      the FastAPI routes (OpenAI-compatible and native), the API key and errors;
* :mod:`.run`      the uvicorn server with a draining SIGTERM, and the CLI glue.

Nothing here plans, loads or measures on its own: the session does.
Importing this package pulls in nothing heavy; its modules import FastAPI,
uvicorn and prometheus-client (the ``serve`` extra).
"""
