"""A ComfyUI workflow file as one flat graph of nodes, whichever of its two formats it is in.

- The UI format (what the browser saves): `nodes` and `links`, each node's widget values a list in
  the order its type declares them, and subgraphs: a node whose type is the id of a definition
  under `definitions.subgraphs` stands for that definition's own nodes and links, whose boundary
  is two pseudo-nodes (LiteGraph ids -10 for its inputs, -20 for its outputs).
- The API format (what `/prompt` takes): `{id: {class_type, inputs}}`, every input named, a link
  written `[node id, output slot]`; the front end has already flattened its subgraphs (ids `57:3`).

Both become `Node`s keyed by the API format's ids (a node inside subgraph instance 57 is `57:3`).
Nodes that only route a value (a Reroute, a subgraph's boundary, a bypassed node) forward each of
their outputs to its source, and `Graph.source` follows those to the node that makes the value.

The file is untrusted: nothing in it is executed, subgraph nesting and the number of nodes it
expands to are bounded, and following links stops at a cycle instead of looping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from parity.core.errors import InputError, shown

# Deeper than any workflow a person builds; it bounds the recursion that expands subgraphs.
MAX_SUBGRAPH_DEPTH = 16
# A subgraph used k times inside another used k times ... expands as k**depth: this bounds the
# flattened graph (the official Z-Image workflow has a dozen nodes).
MAX_NODES = 20_000
# LiteGraph's node modes: 2 never runs (muted), 4 passes its inputs through (bypassed).
MUTED, BYPASSED = 2, 4
SUBGRAPH_INPUTS, SUBGRAPH_OUTPUTS = -10, -20


@dataclass(frozen=True)
class Output:
    """One output slot of one node: where a link comes from."""

    node: str
    slot: int


@dataclass(frozen=True)
class Constant:
    """A value a subgraph's outer node gives one of its inputs directly, as a widget."""

    value: Any


@dataclass(frozen=True)
class Node:
    id: str
    type: str
    # Linked inputs, by name, and widget values, by name (in the UI format only for the types whose
    # widget order the caller knows: the file stores them as a bare list).
    links: Mapping[str, Output] = field(default_factory=dict)
    widgets: Mapping[str, Any] = field(default_factory=dict)
    mode: int = 0
    # For a node that only routes: the source of each of its outputs, None where nothing feeds it.
    forwards: Mapping[int, Output | Constant | None] | None = None
    # A boundary or instance the flattening made: never reported as a node of the workflow.
    structural: bool = False

    @property
    def label(self) -> str:
        return f"{self.type[:60]} {self.id[:40]}"


@dataclass(frozen=True)
class Graph:
    nodes: Mapping[str, Node]

    def source(self, output: Output) -> tuple[Node, int] | Constant | None:
        """The node and slot that make what `output` carries, through every node that only routes
        it; a Constant or None where a subgraph input is given a value or nothing."""
        seen: set[Output] = set()
        current = output
        while True:
            if current in seen:
                raise InputError(f"the links through node {shown(current.node)} form a cycle")
            seen.add(current)
            node = self.nodes.get(current.node)
            if node is None:
                raise InputError(f"a link comes from node {shown(current.node)}, which the workflow does not have")
            if node.forwards is None:
                if node.mode == MUTED:
                    raise InputError(f"{node.label} is muted, yet the sampler's inputs come from it")
                return node, current.slot
            forward = node.forwards.get(current.slot)
            if not isinstance(forward, Output):
                return forward
            current = forward


def _node_id(raw: Any, where: str) -> str:
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise InputError(f"{where}: a node id must be a number or a string, not {type(raw).__name__}")
    return str(raw)


def _slot(raw: Any, where: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise InputError(f"{where}: a slot must be a whole number, not {shown(raw)}")
    return raw


def _items(raw: Any, kind: type, where: str) -> Any:
    if not isinstance(raw, kind):
        raise InputError(f"{where} must be a{'n object' if kind is dict else ' list'}, not {type(raw).__name__}")
    return raw


# --- the API format ------------------------------------------------------------------------------


def _is_link(value: Any) -> bool:
    return (
        isinstance(value, list) and len(value) == 2 and isinstance(value[0], int | str)
        and not isinstance(value[0], bool) and isinstance(value[1], int) and not isinstance(value[1], bool)
    )


def is_api_format(data: Any) -> bool:
    return (
        isinstance(data, dict) and bool(data)
        and all(isinstance(v, dict) and "class_type" in v for v in data.values())
    )


def read_api(data: dict[str, Any]) -> Graph:
    if len(data) > MAX_NODES:
        raise InputError(f"the workflow has {len(data)} nodes, more than the {MAX_NODES} read")
    nodes: dict[str, Node] = {}
    for key, entry in data.items():
        where = f"node {shown(key)}"
        kind = entry["class_type"]
        if not isinstance(kind, str):
            raise InputError(f"{where}: class_type must be a string")
        inputs = _items(entry.get("inputs", {}), dict, f"{where}: inputs")
        links = {name: Output(str(v[0]), v[1]) for name, v in inputs.items() if _is_link(v)}
        widgets = {name: v for name, v in inputs.items() if name not in links}
        nodes[key] = Node(key, kind, links, widgets)
    return Graph(nodes)


# --- the UI format -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Link:
    id: int
    origin: Output
    target: str
    target_slot: Any


def _links(raw: Any, prefix: str, where: str) -> list[_Link]:
    """A level's links. The root lists one as [id, origin, slot, target, slot, type]; a subgraph
    definition as an object with those names."""
    found = []
    for entry in _items(raw if raw is not None else [], list, f"{where}: links"):
        if isinstance(entry, list) and len(entry) >= 4:
            link_id, origin, slot, target, target_slot = (*entry[:4], entry[4] if len(entry) > 4 else None)
        elif isinstance(entry, dict):
            keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot")
            link_id, origin, slot, target, target_slot = (entry.get(k) for k in keys)
        else:
            raise InputError(f"{where}: a link must be a list of 6 or an object, not {shown(entry)}")
        link_id = _slot(link_id, f"{where}: link id")
        here = f"{where}: link {link_id}"
        origin = Output(prefix + _node_id(origin, here), _slot(slot, here))
        found.append(_Link(link_id, origin, str(target), target_slot))
    return found


class _Flattener:
    def __init__(self, subgraphs: Mapping[str, dict[str, Any]], widget_order: Mapping[str, tuple[str, ...]]) -> None:
        self.subgraphs = subgraphs
        self.widget_order = widget_order
        self.nodes: dict[str, Node] = {}

    def add(self, node: Node) -> None:
        if len(self.nodes) >= MAX_NODES:
            raise InputError(f"the workflow expands to more than {MAX_NODES} nodes (subgraphs inside subgraphs)")
        if node.id in self.nodes:
            raise InputError(f"two nodes have the id {shown(node.id)}")
        self.nodes[node.id] = node

    def level(self, nodes: Any, links: list[_Link], prefix: str, within: tuple[str, ...], inherited: int) -> None:
        """One graph level's nodes; `inherited` is a muted or bypassed outer node's mode (else 0)."""
        where = f"subgraph {shown(within[-1])}" if within else "workflow"
        table = {link.id: link.origin for link in links}
        for raw in _items(nodes, list, f"{where}: nodes"):
            raw = _items(raw, dict, f"{where}: a node")
            node_id = prefix + _node_id(raw.get("id"), f"{where}: a node's id")
            kind = raw.get("type")
            if not isinstance(kind, str):
                raise InputError(f"node {node_id}: its type must be a string")
            listed = _items(raw.get("inputs") or [], list, f"node {node_id}: inputs")
            inputs = [i for i in listed if isinstance(i, dict)]
            mode = inherited or (raw.get("mode", 0) if isinstance(raw.get("mode", 0), int) else 0)
            linked = {}
            for entry in inputs:
                link = entry.get("link")
                if link is not None:
                    if _slot(link, f"node {node_id}: input link") not in table:
                        name = shown(entry.get("name"))
                        raise InputError(f"node {node_id}: input {name} names link {link}, which does not exist")
                    linked[str(entry.get("name"))] = table[link]
            if kind in self.subgraphs:
                self.instance(raw, node_id, kind, inputs, linked, within, mode)
            elif kind == "Reroute":
                self.add(Node(node_id, kind, linked, forwards={0: next(iter(linked.values()), None)}, structural=True))
            elif mode == BYPASSED:
                self.add(Node(node_id, kind, linked, mode=mode, forwards=self.bypass(raw, inputs, linked)))
            else:
                self.add(Node(node_id, kind, linked, self.widgets(kind, raw.get("widgets_values")), mode))

    def widgets(self, kind: str, values: Any) -> dict[str, Any]:
        if isinstance(values, dict):
            return {k: v for k, v in values.items() if isinstance(k, str)}
        names = self.widget_order.get(kind, ())
        # Another version of a node may store more or fewer values: the names it has still match.
        return dict(zip(names, values, strict=False)) if isinstance(values, list) else {}

    @staticmethod
    def bypass(
        raw: dict[str, Any], inputs: list[dict[str, Any]], linked: dict[str, Output]
    ) -> dict[int, Output | None]:
        """A bypassed node hands each output the first linked input of the same type, as LiteGraph does."""
        outputs = _items(raw.get("outputs") or [], list, f"node {shown(raw.get('id'))}: outputs")
        by_type: dict[str, Output] = {}
        for entry in inputs:
            name = str(entry.get("name"))
            if name in linked:
                by_type.setdefault(str(entry.get("type")), linked[name])
        return {k: by_type.get(str(o.get("type"))) if isinstance(o, dict) else None for k, o in enumerate(outputs)}

    def instance(
        self, raw: dict[str, Any], node_id: str, kind: str, inputs: list[dict[str, Any]],
        linked: dict[str, Output], within: tuple[str, ...], mode: int,
    ) -> None:
        if kind in within:
            raise InputError(f"subgraph {shown(kind)} contains itself")
        if len(within) >= MAX_SUBGRAPH_DEPTH:
            raise InputError(f"subgraphs nest deeper than {MAX_SUBGRAPH_DEPTH} levels")
        definition = self.subgraphs[kind]
        inner = f"{node_id}:"
        declared = _items(definition.get("inputs") or [], list, f"subgraph {shown(kind)}: inputs")
        # An older front end stored the outer node's widget values in the order of its widget inputs;
        # a newer one stores none and shows the inner widgets themselves.
        widget_inputs = [str(i.get("name")) for i in inputs if "widget" in i]
        values = raw.get("widgets_values")
        stored = isinstance(values, list) and len(values) == len(widget_inputs)
        given = dict(zip(widget_inputs, values, strict=True)) if stored else {}
        feeds: dict[int, Output | Constant | None] = {}
        for k, entry in enumerate(declared):
            name = str(entry.get("name")) if isinstance(entry, dict) else ""
            feeds[k] = linked.get(name) or (Constant(given[name]) if name in given else None)
        self.add(Node(f"{inner}{SUBGRAPH_INPUTS}", "subgraph inputs", forwards=feeds, structural=True))
        links = _links(definition.get("links"), inner, f"subgraph {shown(kind)}")
        # Output k of the instance is what the definition links into its output boundary's slot k.
        results: dict[int, Output | Constant | None] = {
            _slot(link.target_slot, f"subgraph {shown(kind)}: link {link.id}"): link.origin
            for link in links if link.target == str(SUBGRAPH_OUTPUTS)
        }
        self.add(Node(node_id, kind, linked, forwards=results, structural=True))
        self.level(definition.get("nodes"), links, inner, (*within, kind), mode if mode in (MUTED, BYPASSED) else 0)


def read_ui(data: dict[str, Any], widget_order: Mapping[str, tuple[str, ...]]) -> Graph:
    """The UI format's graph; `widget_order` names each known type's widget values in file order."""
    definitions = data.get("definitions") or {}
    listed = _items(definitions, dict, "definitions").get("subgraphs") or []
    definitions = [d for d in _items(listed, list, "definitions.subgraphs") if isinstance(d, dict)]
    subgraphs = {d["id"]: d for d in definitions if isinstance(d.get("id"), str)}
    flattener = _Flattener(subgraphs, widget_order)
    flattener.level(data.get("nodes"), _links(data.get("links"), "", "workflow"), "", (), 0)
    return Graph(flattener.nodes)
