"""The report picture of a version: the tutorial's figure, a held-out sine, and the loss curve."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from training.data import sine_batch, tutorial_data, ungroup

Model = Callable[[torch.Tensor], torch.Tensor]
EXAMPLE_STEP = 0.19  # rad per sample: a plain sine the tutorial's own model gets wrong
EXAMPLE_LENGTH = 200


@torch.inference_mode()
def render(model: Model, losses: Sequence[float], title: str) -> bytes:
    """PNG bytes of a three-panel figure for `model` trained with loss history `losses`."""
    data = tutorial_data()
    split = data.split
    # A Figure of its own on the Agg canvas, not pyplot: no global figure registry or backend switch, and a
    # third less import time in every training process. Fixed margins instead of tight_layout, which measured
    # every text's extent and took half of the render (`python -m benchmarks.report_render`).
    fig = Figure(figsize=(10, 11))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.05, top=0.97, hspace=0.32)
    top, middle, bottom = fig.subplots(3, 1, gridspec_kw={"height_ratios": [3, 2, 2]})
    t_train, t_test = data.t[:split], data.t[split:]
    top.plot(t_train, ungroup(data.train_x), "g", label="sin_trn")
    top.plot(t_train, ungroup(data.train_y), "b", label="ref_cos_trn")
    top.plot(t_train, ungroup(model(data.train_x)), "y--", label="pre_cos_trn")
    top.plot(t_test, ungroup(data.test_x), "c", label="sin_tst")
    top.plot(t_test, ungroup(data.test_y), "k", label="ref_cos_tst")
    top.plot(t_test, ungroup(model(data.test_x)), "m--", label="pre_cos_tst")
    top.axvline(data.t[split], color="r", linestyle="--", label="separation line")
    top.set(xlabel="t", ylabel="sin(t) and cos(t)", xlim=(data.t[0], data.t[-1]), ylim=(-1.2, 4.0))
    top.set_title(f"{title}: the tutorial's data (stride-5 sequences)")
    top.legend(loc="upper right", ncol=2, fontsize=8)
    top.text(14, 2, "train", size=15)
    top.text(20, 2, "test", size=15)

    x, y = sine_batch(torch.tensor([EXAMPLE_STEP]), torch.tensor([0.3]), EXAMPLE_LENGTH)  # (200, 1, 1)
    steps = range(EXAMPLE_LENGTH)
    middle.plot(steps, x.reshape(-1).numpy(), "c", label="input sin")
    middle.plot(steps, y.reshape(-1).numpy(), "k", label="reference cos")
    middle.plot(steps, model(x).reshape(-1).numpy(), "m--", label="predicted cos")
    middle.set(xlabel=f"sample (step {EXAMPLE_STEP} rad)", ylabel="value", ylim=(-1.3, 1.3))
    middle.set_title("a held-out sine at another sampling step")
    middle.legend(loc="upper right", fontsize=8)

    bottom.semilogy(range(1, len(losses) + 1), losses, "b")
    bottom.set(xlabel="epoch", ylabel="training loss (MSE)")
    bottom.set_title("loss curve")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()
