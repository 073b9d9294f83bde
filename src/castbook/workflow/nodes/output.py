"""The output node: marks a value as one of the workflow's results."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from castbook.workflow.nodes.base import Node, Port, PortType, register

if TYPE_CHECKING:
    from castbook.workflow.context import NodeContext

__all__ = ["OutputNode"]


@register
class OutputNode(Node):
    """Marks a value as a result of the workflow."""

    type: Literal["output"]
    title: ClassVar[str] = "Output"
    workflow_output: ClassVar[bool] = True
    label: str | None = Field(default=None, max_length=100)
    ports: ClassVar[dict[str, Port]] = {"value": Port(PortType.ANY)}

    def invoke(self, context: NodeContext) -> dict[str, Any]:
        return {"value": context.value("value")}
