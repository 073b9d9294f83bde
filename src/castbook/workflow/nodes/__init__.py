"""The workflow node types: typed inputs, a type id, a version, typed output ports, their
checks and how they run.

A node's *literal* inputs are the fields of its pydantic model (ranges as the API's, from
:data:`castbook.generation.request.LIMITS`); its *port* inputs take links to other nodes'
outputs and are declared in ``ports``. Wiring rules by port type: an ``image`` port takes an
image or a character (its primary reference image); an ``images`` port takes images or a
single image; ``character``, ``video`` and ``scores`` take only their own type; the output
node's ``value`` takes anything.

Each type is one class (see :mod:`castbook.workflow.nodes.base`), registered with
:func:`register`. A new type goes in one of these modules or in a new module of this
package: every module here is imported (the built-in ones first, in the catalogue's order,
then any other in name order), so the new file is the only one to touch.
"""

import importlib
import pkgutil

from castbook.workflow.nodes.base import (
    NODE_TYPES,
    Node,
    Port,
    PortType,
    accepted_types,
    accepts,
    register,
)

# isort: off
# Registered as imported: this is the catalogue's (and the web palette's) order.
from castbook.workflow.nodes.library import CharacterNode, ImageNode
from castbook.workflow.nodes.generate import ImageToImageNode, ImageToVideoNode, TextToImageNode
from castbook.workflow.nodes.scoring import BatchRenderNode, ConsistencyEvalNode
from castbook.workflow.nodes.output import OutputNode

# isort: on

for _module in pkgutil.iter_modules(__path__):
    # Any other module of this package registers its node types too (after the built-in
    # ones, so the catalogue's order stays theirs).
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "NODE_TYPES",
    "BatchRenderNode",
    "CharacterNode",
    "ConsistencyEvalNode",
    "ImageNode",
    "ImageToImageNode",
    "ImageToVideoNode",
    "Node",
    "OutputNode",
    "Port",
    "PortType",
    "TextToImageNode",
    "accepted_types",
    "accepts",
    "register",
]
