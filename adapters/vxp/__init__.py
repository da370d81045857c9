"""The operator's client protocol (VXP): the codec (``protocol``), its methods over HTTP on any
backend (``service``), and the axis's own facade (``facade``), which ``axis serve`` mounts."""

from adapters.vxp.facade import mount

__all__ = ["mount"]
