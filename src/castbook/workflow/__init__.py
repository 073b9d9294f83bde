"""Workflows: typed nodes wired into a small graph, validated before it is queued and run
as one job (kind ``workflow``); saved per owner."""

from castbook.workflow.catalog import node_catalog
from castbook.workflow.graph import (
    Graph,
    GraphError,
    GraphProblem,
    Link,
    ParsedNode,
    parse_graph,
    topological_order,
)
from castbook.workflow.nodes import NODE_TYPES, Node, Port, PortType, accepts
from castbook.workflow.store import SavedWorkflow, WorkflowStore

__all__ = [
    "NODE_TYPES",
    "Graph",
    "GraphError",
    "GraphProblem",
    "Link",
    "Node",
    "ParsedNode",
    "Port",
    "PortType",
    "SavedWorkflow",
    "WorkflowStore",
    "accepts",
    "node_catalog",
    "parse_graph",
    "topological_order",
]
