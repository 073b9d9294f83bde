"""Workflows: typed nodes wired into a small graph, validated before it is queued and run
as one job (kind ``workflow``); saved per owner."""

from castbook.workflow.catalog import node_catalog
from castbook.workflow.context import NodeContext
from castbook.workflow.graph import (
    Graph,
    GraphError,
    GraphProblem,
    Link,
    ParsedNode,
    check_draft,
    parse_graph,
    topological_order,
)
from castbook.workflow.nodes import NODE_TYPES, Node, Port, PortType, accepts, register
from castbook.workflow.store import SavedWorkflow, WorkflowStore
from castbook.workflow.validate import CheckContext, GraphChecker, check_graph

__all__ = [
    "NODE_TYPES",
    "CheckContext",
    "Graph",
    "GraphChecker",
    "GraphError",
    "GraphProblem",
    "Link",
    "Node",
    "NodeContext",
    "ParsedNode",
    "Port",
    "PortType",
    "SavedWorkflow",
    "WorkflowStore",
    "accepts",
    "check_draft",
    "check_graph",
    "node_catalog",
    "parse_graph",
    "register",
    "topological_order",
]
