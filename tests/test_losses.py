"""MGCA losses (Eq. 3-8) against a loop-by-loop transcription of the paper's equations."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mgca.config import LossConfig
from mgca.losses import MGCALoss, mask_size, object_mask, semi_hard_positive

TERMS = ("loss", "obj", "reg", "pix")


def make_inputs(batch: int, pixels: int = 50, channels: int = 8, seed: int = 0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(batch, pixels, channels, generator=generator, dtype=dtype).requires_grad_()
    t = torch.randn(batch, channels, generator=generator, dtype=dtype).requires_grad_()
    return v, t


def reference_losses(v: torch.Tensor, t: torch.Tensor, cfg: LossConfig) -> dict[str, torch.Tensor]:
    """Eq. 2-8 with explicit loops over i, j, p; masks and ranks are constants (index choices)."""
    batch, length, channels = v.shape
    tau = cfg.tau
    f = cfg.scale if cfg.scale is not None else 5 * math.sqrt(channels)

    def cos(x, y):
        return torch.dot(x, y) / (torch.sqrt(torch.dot(x, x)) * torch.sqrt(torch.dot(y, y)))

    sim = [[[torch.dot(v[i, p], t[j]) for p in range(length)] for j in range(batch)] for i in range(batch)]
    region = [[None] * batch for _ in range(batch)]
    object_pixels = [None] * batch
    for i in range(batch):
        for j in range(batch):
            denom = sum(torch.exp(sim[i][j][q]) for q in range(length))
            prob = [torch.exp(sim[i][j][p]) / denom for p in range(length)]
            k = cfg.k_obj if i == j else cfg.k_neg
            size = math.ceil(k * length)
            inside = sorted(range(length), key=lambda p: prob[p].item(), reverse=True)[:size]
            region[i][j] = sum(v[i, p] * prob[p] for p in inside)
            if i == j:
                object_pixels[i] = inside

    def two_sided(pos_img, den_img, pos_txt, den_txt):
        terms = (torch.log(pos_img[i] / den_img[i]) + torch.log(pos_txt[i] / den_txt[i]) for i in range(batch))
        return -sum(terms) / batch

    e = lambda x: torch.exp(x / tau)
    rb = range(batch)
    obj = two_sided(
        [e(cos(region[i][i], t[i])) for i in rb], [sum(e(cos(region[i][i], t[j])) for j in rb) for i in rb],
        [e(cos(t[i], region[i][i])) for i in rb], [sum(e(cos(t[i], region[j][j])) for j in rb) for i in rb],
    )
    reg = two_sided(
        [e(cos(region[i][i], t[i])) for i in rb], [sum(e(cos(region[i][j], t[j])) for j in rb) for i in rb],
        [e(cos(t[i], region[i][i])) for i in rb], [sum(e(cos(t[i], region[j][i])) for j in rb) for i in rb],
    )
    positives = []
    for i in rb:
        in_object = sorted((sim[i][i][p] / f for p in object_pixels[i]), key=lambda s: s.item(), reverse=True)
        rank = min(max(math.ceil(cfg.k_pix * len(in_object)), 1), len(in_object))
        positives.append(in_object[rank - 1])
    hardest = [[max((sim[i][j][p] / f for p in range(length)), key=lambda s: s.item()) for j in rb]
               for i in rb]
    pix = two_sided(
        [e(positives[i]) for i in rb], [e(positives[i]) + sum(e(hardest[i][j]) for j in rb if j != i) for i in rb],
        [e(positives[i]) for i in rb], [e(positives[i]) + sum(e(hardest[j][i]) for j in rb if j != i) for i in rb],
    )
    terms = {"obj": obj, "reg": reg, "pix": pix}
    enabled = {"obj": cfg.use_obj, "reg": cfg.use_reg, "pix": cfg.use_pix}
    terms = {name: value if enabled[name] else torch.zeros((), dtype=v.dtype) for name, value in terms.items()}
    return {"loss": terms["obj"] + terms["reg"] + terms["pix"], **terms}


def value_and_grads(losses: dict[str, torch.Tensor], v: torch.Tensor, t: torch.Tensor):
    """Each term's value and its gradients w.r.t. V and T (zeros where a term is constant)."""
    out = {}
    for name in TERMS:
        term = losses[name]
        if term.requires_grad:
            gv, gt = torch.autograd.grad(term, (v, t), retain_graph=True, allow_unused=True)
        else:
            gv, gt = None, None
        out[name] = (
            term.detach(),
            torch.zeros_like(v) if gv is None else gv,
            torch.zeros_like(t) if gt is None else gt,
        )
    return out


def assert_same(actual, expected, atol=1e-10):
    for name in TERMS:
        for got, want in zip(actual[name], expected[name], strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=atol, msg=lambda m, name=name: f"{name}: {m}")


CONFIGS = {
    "default": LossConfig(),
    "most_similar_positive": LossConfig(k_pix=0.0),
    "least_similar_positive": LossConfig(k_pix=1.0),
    "wide_negatives_custom_scale": LossConfig(k_obj=0.3, k_neg=0.2, k_pix=0.5, tau=0.2, scale=3.0),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_reference_values_and_grads(name):
    cfg = CONFIGS[name]
    v, t = make_inputs(batch=4, seed=1)
    expected = value_and_grads(reference_losses(v, t, cfg), v, t)
    actual = value_and_grads(MGCALoss(cfg)(v, t), v, t)
    assert all(torch.isfinite(actual[n][0]) and actual[n][0] > 0 for n in TERMS)
    assert_same(actual, expected)


@pytest.mark.parametrize("switch", ["use_obj", "use_reg", "use_pix"])
def test_term_switches(switch):
    """A disabled term is a constant 0, the others are unchanged, and the total drops it."""
    v, t = make_inputs(batch=4, seed=2)
    full = MGCALoss(LossConfig())(v, t)
    losses = MGCALoss(LossConfig(**{switch: False}))(v, t)
    off = switch.removeprefix("use_")
    assert set(losses) == set(TERMS)
    assert losses[off] == 0 and not losses[off].requires_grad
    expected = dict(full)
    expected[off] = torch.zeros((), dtype=v.dtype)
    expected["loss"] = sum(expected[name] for name in ("obj", "reg", "pix"))
    assert_same(value_and_grads(losses, v, t), value_and_grads(expected, v, t))


def test_all_terms_off_gives_zeros():
    v, t = make_inputs(batch=3)
    losses = MGCALoss(LossConfig(use_obj=False, use_reg=False, use_pix=False))(v, t)
    assert set(losses) == set(TERMS) and all(value == 0 for value in losses.values())


@pytest.mark.parametrize("chunk_size", [1, 3])
@pytest.mark.parametrize("name", ["default", "wide_negatives_custom_scale"])
def test_chunked_equals_unchunked(chunk_size, name):
    cfg = CONFIGS[name]
    v, t = make_inputs(batch=5, seed=3)
    whole = value_and_grads(MGCALoss(cfg)(v, t), v, t)
    chunked = value_and_grads(MGCALoss(dataclasses.replace(cfg, chunk_size=chunk_size))(v, t), v, t)
    assert_same(chunked, whole, atol=1e-12)


def test_chunked_without_grad_matches():
    v, t = make_inputs(batch=5, seed=4)
    with torch.no_grad():
        whole = MGCALoss(LossConfig())(v, t)
        chunked = MGCALoss(LossConfig(chunk_size=2))(v, t)
    for name in TERMS:
        torch.testing.assert_close(chunked[name], whole[name], rtol=0, atol=1e-12)


def test_single_image_batch_has_no_contrast():
    """With B=1 every softmax has one candidate (pix has no negatives): each term is log 1 = 0."""
    v, t = make_inputs(batch=1, seed=5)
    losses = MGCALoss(LossConfig(chunk_size=1))(v, t)
    grads = value_and_grads(losses, v, t)
    for name in TERMS:
        value, gv, gt = grads[name]
        assert value == 0
        assert torch.isfinite(gv).all() and torch.isfinite(gt).all()
        assert gv.abs().max() < 1e-12 and gt.abs().max() < 1e-12


@pytest.mark.parametrize(("fraction", "total", "expected"), [
    (0.4, 784, 314), (0.05, 784, 40), (0.06, 314, 19), (0.4, 50, 20), (0.05, 50, 3),
    (0.15, 20, 3),  # 0.15 * 20 == 3.0000000000000004 in floats: still 3 pixels
    (0.0, 10, 1), (1.0, 10, 10), (1.5, 10, 10),
])
def test_mask_size_is_ceil_of_area(fraction, total, expected):
    assert mask_size(fraction, total) == expected


@pytest.mark.parametrize("k", [0.05, 0.4, 1.0])
def test_object_mask_selects_top_pixels(k):
    prob = torch.randn(3, 2, 50, generator=torch.Generator().manual_seed(6)).softmax(-1)
    mask = object_mask(prob, k)
    size = math.ceil(k * 50)
    assert (mask.sum(-1) == size).all()
    kth = prob.topk(size, dim=-1).values[..., -1:]
    assert torch.equal(mask, prob >= kth)


def test_semi_hard_positive_rank_extremes():
    sim = torch.randn(4, 30, generator=torch.Generator().manual_seed(7))
    mask = object_mask(sim.softmax(-1), 0.4)  # 12 pixels
    inside = sim.masked_fill(~mask, float("nan"))
    torch.testing.assert_close(semi_hard_positive(sim, mask, 12, 0.0), inside.nan_to_num(float("-inf")).amax(-1))
    torch.testing.assert_close(semi_hard_positive(sim, mask, 12, 1.0), inside.nan_to_num(float("inf")).amin(-1))
    # rank ceil(0.25 * 12) = 3: the third most similar pixel of the object
    torch.testing.assert_close(semi_hard_positive(sim, mask, 12, 0.25), sim.topk(3, dim=-1).values[:, 2])


def test_half_precision_inputs_reduce_in_float32():
    v, t = make_inputs(batch=4, seed=8, dtype=torch.bfloat16)
    losses = MGCALoss(LossConfig())(v, t)
    assert all(value.dtype == torch.float32 and torch.isfinite(value) for value in losses.values())
    losses["loss"].backward()
    assert v.grad.dtype == torch.bfloat16 and torch.isfinite(v.grad.float()).all()
