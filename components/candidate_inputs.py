"""Inputs that come once per candidate (the Pusher's, the explainer's), as single channels.

A run has as many candidates as its configuration names. TFX's union channels would carry them in
one input, but TFX's Kubeflow V2 compiler refuses them ("Only single Channel is supported"), so a
component that looks at every candidate gets one input key per candidate and kind instead:
``model__b7_image``, ``blessing__b7_text``, ... Its spec class is the component's base spec with
those keys added (an instance of a subclass passes TFX's spec check).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Type

from tfx.types.component_spec import ChannelParameter, ComponentSpec

SEPARATOR = "__"


def key(kind: str, candidate: str) -> str:
    """The input key of one candidate's artifact of one kind, e.g. ``model__b7_text``."""
    return f"{kind}{SEPARATOR}{candidate}"


def spec_class(base: Type[ComponentSpec], kinds: Mapping[str, ChannelParameter], candidates: List[str]) -> Type[ComponentSpec]:
    """``base`` with one input per candidate and kind."""
    if not candidates:
        raise ValueError("at least one candidate is needed")
    inputs = {key(kind, name): ChannelParameter(type=param.type, optional=param.optional)
              for kind, param in kinds.items() for name in candidates}
    return type(base.__name__, (base,), {"INPUTS": {**base.INPUTS, **inputs}})


def gather(input_dict: Mapping[str, List[Any]], kind: str) -> Dict[str, Any]:
    """Candidate name → its single artifact of ``kind`` (candidates with no such artifact left out)."""
    prefix = f"{kind}{SEPARATOR}"
    out = {}
    for name, artifacts in input_dict.items():
        if name.startswith(prefix) and artifacts:
            if len(artifacts) != 1:
                raise ValueError(f"input '{name}' holds {len(artifacts)} artifacts, expected one")
            out[name[len(prefix):]] = artifacts[0]
    return out
