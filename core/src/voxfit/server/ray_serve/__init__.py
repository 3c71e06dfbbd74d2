"""``voxfit serve`` on Ray Serve: replicas that each plan on their node, behind one HTTP ingress.

Needs the ``ray`` extra (``pip install 'voxfit[ray]'``); nothing in ``voxfit``
imports this package unless ``--ray`` is asked for. See docs/ray.md.
"""

from voxfit.server.ray_serve.launch import app_builder, serve_on_ray

__all__ = ["app_builder", "serve_on_ray"]
