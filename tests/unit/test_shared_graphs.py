"""A family member loaded into a copy of the family's warmed graph answers with its own weights, and only a graph of
the same signature (code, constants, parameter shapes) is ever shared."""

from __future__ import annotations

import io

import torch

from eks_inference.runtime.shared_graphs import GraphPool, signature


class Head(torch.nn.Module):
    def __init__(self, width: int = 8, scale: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.lin = torch.nn.Linear(4, width)
        self.out = torch.nn.Linear(width, 2)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.lin(x))) * self.scale


def saved(module: torch.nn.Module) -> torch.jit.ScriptModule:
    """Traced, saved and loaded again, as a replica loads a member's artifact (a compilation unit of its own)."""
    graph = torch.jit.trace(module.eval(), torch.ones(3, 4))
    buf = io.BytesIO()
    torch.jit.save(graph, buf)
    buf.seek(0)
    return torch.jit.load(buf).eval()


X = torch.linspace(-1, 1, 12).reshape(3, 4)


def test_a_member_in_the_shared_graph_answers_with_its_own_weights() -> None:
    pool = GraphPool()
    first = saved(Head(seed=1))
    got, shared = pool.share(first)
    assert got is first and not shared  # no skeleton yet
    for _ in range(3):
        first(X)  # the warm-up
    pool.adopt(first)
    assert len(pool) == 1
    members = [Head(seed=s) for s in (2, 3, 4)]
    clones = []
    for m in members:
        clone, shared = pool.share(saved(m))
        assert shared
        clones.append(clone)
    for m, clone in zip(members, clones, strict=True):  # each clone keeps its own weights, however many exist
        with torch.no_grad():
            want = m(X)
        torch.testing.assert_close(clone(X), want)
        assert not torch.allclose(clone(X), first(X))
    torch.testing.assert_close(first(X), Head(seed=1).eval()(X).detach())  # the adopted graph was copied, not reused
    assert pool.shared == 3


def test_only_a_graph_of_the_same_signature_is_shared() -> None:
    pool = GraphPool()
    base = saved(Head(seed=1))
    base(X)
    pool.adopt(base)
    wider = saved(Head(width=16, seed=1))  # another size: other parameter shapes
    got, shared = pool.share(wider)
    assert got is wider and not shared
    scaled = saved(Head(scale=3.0, seed=1))  # the same weights' shapes, another constant in the traced code
    assert signature(scaled) != signature(base)
    got, shared = pool.share(scaled)
    assert got is scaled and not shared
    torch.testing.assert_close(got(X), Head(scale=3.0, seed=1).eval()(X).detach())
    assert signature(base) == signature(saved(Head(seed=7)))  # other weights, same signature
    assert signature(Head()) is None  # eager modules are never shared


def test_the_pool_keeps_a_bounded_number_of_skeletons() -> None:
    pool = GraphPool(max_skeletons=2)
    for width in (4, 8, 16):
        pool.adopt(saved(Head(width=width)))
    assert len(pool) == 2
    _, shared = pool.share(saved(Head(width=4, seed=9)))  # the least recently used went
    assert not shared
    clone, shared = pool.share(saved(Head(width=16, seed=9)))
    assert shared
    torch.testing.assert_close(clone(X), Head(width=16, seed=9).eval()(X).detach())


def test_a_graph_without_state_is_never_shared() -> None:
    """A compiled Neuron graph keeps its weights inside the compiled model: no state_dict carries them, so two
    members' graphs could look alike; such a graph is never shared."""

    class Stateless(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    pool = GraphPool()
    g = saved(Stateless())
    assert signature(g) is None
    pool.adopt(g)
    assert len(pool) == 0 and pool.share(saved(Stateless()))[1] is False
