"""Reference implementations used as test oracles and benchmark anchors (slow on purpose).

``flow_reference`` follows the official code of Abnar & Zuidema (samiraabnar/attention_flow,
``get_adjmat`` + ``compute_flows``): a networkx DiGraph over all (L + 1) n nodes with the
residual-augmented attention weights as edge capacities, one Edmonds-Karp max-flow per
(output, input) pair, rows normalized. Only the last layer's rows are computed.
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from attnlens.lenses._attention import check_attention, residual_attention

__all__ = ["flow_reference"]


def flow_reference(att) -> np.ndarray:
    """(layers, heads, n, n) attention -> (n, n) attention flow via networkx (the paper's way)."""
    aug = residual_attention(check_attention(att, caller="flow_reference"))  # (L, n, n)
    n_layers, n, _ = aug.shape
    graph = nx.DiGraph()
    graph.add_nodes_from(range((n_layers + 1) * n))
    for layer in range(1, n_layers + 1):
        for k_from in range(n):
            for k_to in range(n):
                weight = aug[layer - 1, k_from, k_to]
                if weight != 0:
                    graph.add_edge(layer * n + k_from, (layer - 1) * n + k_to, capacity=weight)
    flows = np.zeros((n, n))
    for out in range(n):
        for inp in range(n):
            flows[out, inp] = nx.maximum_flow_value(
                graph, n_layers * n + out, inp, flow_func=nx.algorithms.flow.edmonds_karp)
    return flows / flows.sum(axis=1, keepdims=True)
